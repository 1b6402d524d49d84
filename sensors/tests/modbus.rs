//! Modbus sources against real in-process servers: TCP on 127.0.0.1:0, and RTU over a
//! pseudo-terminal pair. The device model serves a register map, refuses unmapped addresses
//! with IllegalDataAddress, and can be told to stall (never answer).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kdelta_sensors::modbus::{
    ModbusRtuConfig, ModbusSource, ModbusTcpConfig, RegisterConfig, RegisterFunction as F,
    RegisterType as T, WordOrder,
};
use kdelta_sensors::{PolledSource, Reading, SourceError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

const UNIT: u8 = 7;
const TIMEOUT: Duration = Duration::from_millis(300);
/// Upper bound for any single sample, so a hang fails the test instead of blocking it.
const DEADLINE: Duration = Duration::from_secs(10);

/// The simulated device, shared by every connection the server accepts.
#[derive(Default)]
struct DeviceState {
    holding: BTreeMap<u16, u16>,
    input: BTreeMap<u16, u16>,
    coils: BTreeMap<u16, bool>,
    stall: AtomicBool,
    connections: AtomicUsize,
    requests: AtomicUsize,
}

#[derive(Clone)]
struct Device(Arc<DeviceState>);

type Answer = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

fn words(map: &BTreeMap<u16, u16>, start: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
    (start..start + count)
        .map(|a| {
            map.get(&a)
                .copied()
                .ok_or(ExceptionCode::IllegalDataAddress)
        })
        .collect()
}

impl Service for Device {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Answer;

    fn call(&self, req: Self::Request) -> Self::Future {
        let state = &self.0;
        state.requests.fetch_add(1, Ordering::SeqCst);
        if state.stall.load(Ordering::SeqCst) {
            return Box::pin(std::future::pending());
        }
        if req.slave != UNIT {
            // Another unit on the bus: stay silent, as a real RTU device would.
            return Box::pin(async { Ok(None) });
        }
        let answer = match req.request {
            Request::ReadHoldingRegisters(a, n) => {
                words(&state.holding, a, n).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(a, n) => {
                words(&state.input, a, n).map(Response::ReadInputRegisters)
            }
            Request::ReadCoils(a, n) => (a..a + n)
                .map(|a| {
                    state
                        .coils
                        .get(&a)
                        .copied()
                        .ok_or(ExceptionCode::IllegalDataAddress)
                })
                .collect::<Result<Vec<bool>, _>>()
                .map(Response::ReadCoils),
            _ => Err(ExceptionCode::IllegalFunction),
        };
        Box::pin(async move { answer.map(Some) })
    }
}

/// The register map: one value of every type, both word orders.
fn device_state() -> DeviceState {
    let mut s = DeviceState::default();
    let f = 21.5f32.to_bits();
    let (f_hi, f_lo) = ((f >> 16) as u16, f as u16);
    let i = (-100_000i32) as u32;
    for (addr, word) in [
        (0, 1234),           // u16, scale 0.1
        (1, (-5i16) as u16), // i16, offset 100
        (2, 0x0001),         // u32 big: 65538
        (3, 0x0002),
        (4, f_hi), // f32 big: 21.5
        (5, f_lo),
        (6, f_lo), // f32 little: 21.5
        (7, f_hi),
        (8, i as u16), // i32 little: -100000
        (9, (i >> 16) as u16),
        // 10 is unmapped: reading it draws IllegalDataAddress.
        (11, 42),
    ] {
        s.holding.insert(addr, word);
    }
    s.input.insert(0, 500);
    s.coils.insert(0, true);
    s.coils.insert(1, false);
    s
}

fn reg(name: &str, function: F, address: u16, ty: T) -> RegisterConfig {
    let mut r = RegisterConfig::new(name, function, address);
    r.data_type = Some(ty);
    r
}

fn register_map() -> Vec<RegisterConfig> {
    let mut tenth = reg("tenth", F::Holding, 0, T::U16);
    tenth.scale = 0.1;
    tenth.unit = Some("°C".into());
    let mut signed = reg("signed", F::Holding, 1, T::I16);
    signed.offset = 100.0;
    let mut f_little = reg("f_little", F::Holding, 6, T::F32);
    f_little.word_order = WordOrder::Little;
    let mut i_little = reg("i_little", F::Holding, 8, T::I32);
    i_little.word_order = WordOrder::Little;
    let mut input = reg("input", F::Input, 0, T::U16);
    input.scale = 0.01;
    input.offset = -1.0;
    vec![
        tenth,
        signed,
        reg("big32", F::Holding, 2, T::U32),
        reg("f_big", F::Holding, 4, T::F32),
        f_little,
        i_little,
        reg("unmapped", F::Holding, 10, T::U16),
        reg("after", F::Holding, 11, T::U16),
        input,
        reg("pump", F::Coil, 0, T::Bool),
        reg("valve", F::Coil, 1, T::Bool),
    ]
}

/// A Modbus TCP server task on `listener`.
fn serve_tcp(listener: TcpListener, state: Arc<DeviceState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let server = tokio_modbus::server::tcp::Server::new(listener);
        let on_connected = move |stream, _peer: SocketAddr| {
            let state = state.clone();
            async move {
                state.connections.fetch_add(1, Ordering::SeqCst);
                Ok(Some((Device(state), stream)))
            }
        };
        let _ = server.serve(&on_connected, |_err| {}).await;
    })
}

async fn start_tcp() -> (SocketAddr, Arc<DeviceState>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(device_state());
    let task = serve_tcp(listener, state.clone());
    (addr, state, task)
}

fn tcp_source(addr: SocketAddr, registers: Vec<RegisterConfig>) -> ModbusSource {
    let mut c = ModbusTcpConfig::new(addr.to_string(), registers);
    c.unit_id = UNIT;
    c.timeout = TIMEOUT;
    c.name = Some("plc".into());
    ModbusSource::tcp(c).unwrap()
}

async fn sample(source: &mut ModbusSource) -> Result<Vec<Reading>, SourceError> {
    tokio::time::timeout(DEADLINE, source.sample())
        .await
        .expect("sample exceeded the deadline")
}

fn values(readings: &[Reading]) -> BTreeMap<String, f64> {
    readings
        .iter()
        .map(|r| (r.series.clone(), r.value))
        .collect()
}

fn assert_full_map(readings: &[Reading]) {
    let got = values(readings);
    let want: BTreeMap<String, f64> = [
        ("plc.tenth", 123.4),
        ("plc.signed", 95.0),
        ("plc.big32", 65538.0),
        ("plc.f_big", 21.5),
        ("plc.f_little", 21.5),
        ("plc.i_little", -100_000.0),
        ("plc.after", 42.0),
        ("plc.input", 4.0),
        ("plc.pump", 1.0),
        ("plc.valve", 0.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, v) in &want {
        assert!((got[k] - v).abs() < 1e-9, "{k}: {} != {v}", got[k]);
    }
    let tenth = readings.iter().find(|r| r.series == "plc.tenth").unwrap();
    assert_eq!(tenth.unit.as_deref(), Some("°C"));
}

#[tokio::test]
async fn reads_scaled_values_and_survives_an_exception() {
    let (addr, state, server) = start_tcp().await;
    let mut source = tcp_source(addr, register_map());
    // holding 0..12 (one batch, containing the unmapped 10), input 0, coils 0..2.
    assert_eq!(source.requests_per_sample(), 3);

    let readings = sample(&mut source).await.unwrap();
    assert_full_map(&readings);
    // The refused batch was split so the good registers keep working without it.
    assert_eq!(source.requests_per_sample(), 10);

    // From now on one round costs exactly the planned requests, on the same connection.
    let before = state.requests.load(Ordering::SeqCst);
    assert_full_map(&sample(&mut source).await.unwrap());
    assert_eq!(state.requests.load(Ordering::SeqCst) - before, 10);
    assert_eq!(state.connections.load(Ordering::SeqCst), 1);
    server.abort();
}

#[tokio::test]
async fn exception_is_a_protocol_error_naming_address_and_register() {
    let (addr, _state, server) = start_tcp().await;
    let mut source = tcp_source(addr, vec![reg("unmapped", F::Holding, 10, T::U16)]);
    match sample(&mut source).await {
        Err(SourceError::Protocol { device, detail }) => {
            assert_eq!(device, format!("{addr} unit {UNIT}"));
            assert!(
                detail.contains("`unmapped`") && detail.contains("address 10"),
                "{detail}"
            );
            assert!(detail.contains("0x02"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    server.abort();
}

#[tokio::test]
async fn stalled_server_times_out_and_the_next_sample_reconnects() {
    let (addr, state, server) = start_tcp().await;
    let mut source = tcp_source(addr, vec![reg("after", F::Holding, 11, T::U16)]);
    assert_eq!(
        values(&sample(&mut source).await.unwrap())["plc.after"],
        42.0
    );

    state.stall.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    match sample(&mut source).await {
        Err(SourceError::Timeout { device, timeout_ms }) => {
            assert!(device.contains(&addr.to_string()), "{device}");
            assert_eq!(timeout_ms, 300);
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= TIMEOUT);

    state.stall.store(false, Ordering::SeqCst);
    assert_eq!(
        values(&sample(&mut source).await.unwrap())["plc.after"],
        42.0
    );
    // The timed-out connection was dropped: a late reply on it could be taken for the next.
    assert_eq!(state.connections.load(Ordering::SeqCst), 2);
    server.abort();
}

#[tokio::test]
async fn nothing_listening_is_device_missing_and_a_returning_server_recovers() {
    // Reserve a port, then free it so nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut source = tcp_source(addr, vec![reg("after", F::Holding, 11, T::U16)]);
    match sample(&mut source).await {
        Err(SourceError::DeviceMissing { device, .. }) => {
            assert!(device.contains(&addr.to_string()), "{device}")
        }
        other => panic!("{other:?}"),
    }

    let state = Arc::new(device_state());
    let server = serve_tcp(TcpListener::bind(addr).await.unwrap(), state.clone());
    assert_eq!(
        values(&sample(&mut source).await.unwrap())["plc.after"],
        42.0
    );

    // The server dies: the open connection fails once, then nothing listens, then it is back.
    server.abort();
    let _ = server.await;
    let err = sample(&mut source).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = sample(&mut source).await.unwrap_err();
    assert!(matches!(err, SourceError::DeviceMissing { .. }), "{err:?}");
    let server = serve_tcp(TcpListener::bind(addr).await.unwrap(), state);
    assert_eq!(
        values(&sample(&mut source).await.unwrap())["plc.after"],
        42.0
    );
    server.abort();
}

#[tokio::test]
async fn rtu_over_a_pty() {
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair().unwrap();
    let path = slave.name().unwrap();
    let state = Arc::new(device_state());
    let server = tokio_modbus::server::rtu::Server::new(master);
    let server = tokio::spawn(server.serve_forever(Device(state.clone())));

    let mut c = ModbusRtuConfig::new(&path, UNIT, register_map());
    c.timeout = TIMEOUT;
    c.name = Some("plc".into());
    let mut source = ModbusSource::rtu(c).unwrap();
    assert_full_map(&sample(&mut source).await.unwrap());

    // A device that never answers (wrong unit id) is a timeout naming the port and unit.
    let mut wrong = ModbusRtuConfig::new(&path, UNIT + 1, vec![reg("a", F::Holding, 0, T::U16)]);
    wrong.timeout = TIMEOUT;
    drop(source); // release the port: RTU sources open it exclusively
    let mut wrong = ModbusSource::rtu(wrong).unwrap();
    match sample(&mut wrong).await {
        Err(SourceError::Timeout { device, .. }) => {
            assert_eq!(device, format!("{path} unit {}", UNIT + 1))
        }
        other => panic!("{other:?}"),
    }
    drop(slave);
    server.abort();
}

#[tokio::test]
async fn missing_rtu_port_is_device_missing() {
    let dir = tempfile::tempdir().unwrap();
    let port = dir.path().join("ttyRS485");
    let mut source = ModbusSource::rtu(ModbusRtuConfig::new(
        &port,
        1,
        vec![reg("a", F::Input, 0, T::U16)],
    ))
    .unwrap();
    match sample(&mut source).await {
        Err(SourceError::DeviceMissing { device, .. }) => {
            assert!(device.contains("ttyRS485"), "{device}")
        }
        other => panic!("{other:?}"),
    }
}
