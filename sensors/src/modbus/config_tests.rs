//! Tests of the Modbus configs: TOML shape, defaults, address parsing, validation keys.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Tagged {
    ModbusTcp(ModbusTcpConfig),
    ModbusRtu(ModbusRtuConfig),
}

#[test]
fn tcp_config_with_defaults() {
    let c: Tagged = toml::from_str(
        r#"
        kind = "modbus_tcp"
        address = "192.168.1.50"
        registers = [
            { name = "temp", function = "input", address = 0, type = "i16", scale = 0.1, unit = "°C" },
            { name = "energy", address = 10, type = "f32", word_order = "little" },
            { name = "pump", function = "coil", address = 3 },
        ]
        "#,
    )
    .unwrap();
    let Tagged::ModbusTcp(c) = c else { panic!() };
    c.validate().unwrap();
    assert_eq!(c.unit_id, 1);
    assert_eq!(c.timeout, Duration::from_secs(1));
    assert_eq!(c.interval, Duration::from_secs(10));
    assert_eq!(c.host_port().unwrap(), ("192.168.1.50".into(), 502));
    assert_eq!(c.registers[0].scale, 0.1);
    assert_eq!(c.registers[1].function, RegisterFunction::Holding);
    assert_eq!(c.registers[1].word_order, WordOrder::Little);
    assert_eq!(c.registers[1].scale, 1.0);
    assert_eq!(c.registers[2].effective_type(), RegisterType::Bool);
    assert_eq!(c.registers[1].effective_type(), RegisterType::F32);
}

#[test]
fn rtu_config_accepts_slave_alias() {
    let c: Tagged = toml::from_str(
        r#"
        kind = "modbus_rtu"
        port = "/dev/ttyUSB0"
        parity = "even"
        slave = 3
        timeout = "300ms"
        interval = "1m"
        registers = [{ name = "v", address = 0 }]
        "#,
    )
    .unwrap();
    let Tagged::ModbusRtu(c) = c else { panic!() };
    c.validate().unwrap();
    assert_eq!((c.unit_id, c.baud, c.parity), (3, 9600, Parity::Even));
    assert_eq!(c.timeout, Duration::from_millis(300));
    assert_eq!(c.interval, Duration::from_secs(60));
}

#[test]
fn unknown_keys_are_rejected() {
    let err = toml::from_str::<Tagged>(
        "kind = \"modbus_tcp\"\naddress = \"h\"\nregisters = [{ name = \"a\", address = 0, scal = 2 }]",
    )
    .unwrap_err();
    assert!(err.to_string().contains("scal"), "{err}");
    let err = toml::from_str::<Tagged>(
        "kind = \"modbus_tcp\"\naddress = \"h\"\nregisters = [{ name = \"a\", address = 0, type = \"u64\" }]",
    )
    .unwrap_err();
    assert!(err.to_string().contains("u64"), "{err}");
}

#[test]
fn addresses() {
    let parse = |a: &str| ModbusTcpConfig::new(a, vec![]).host_port();
    assert_eq!(parse("plc.local:1502").unwrap(), ("plc.local".into(), 1502));
    assert_eq!(parse("plc.local").unwrap(), ("plc.local".into(), 502));
    assert_eq!(parse("[::1]:5020").unwrap(), ("::1".into(), 5020));
    assert_eq!(parse("::1").unwrap(), ("::1".into(), 502));
    for bad in ["", "host:port", "host:99999", ":502"] {
        assert!(
            matches!(parse(bad), Err(SourceError::Config { key, .. }) if key == "address"),
            "{bad}"
        );
    }
}

/// A change that makes a valid config invalid.
type Mutation = Box<dyn Fn(&mut ModbusTcpConfig)>;

#[test]
fn validate_names_the_key() {
    let ok = || {
        ModbusTcpConfig::new(
            "127.0.0.1:502",
            vec![RegisterConfig::new("a", RegisterFunction::Holding, 0)],
        )
    };
    let cases: Vec<(&str, Mutation)> = vec![
        ("registers", Box::new(|c| c.registers.clear())),
        ("unit_id", Box::new(|c| c.unit_id = 248)),
        ("timeout", Box::new(|c| c.timeout = Duration::ZERO)),
        (
            "interval",
            Box::new(|c| c.interval = Duration::from_millis(1)),
        ),
        ("name", Box::new(|c| c.name = Some(String::new()))),
        (
            "registers[0].name",
            Box::new(|c| c.registers[0].name = "a b".into()),
        ),
        (
            "registers[0].name",
            Box::new(|c| c.registers[0].name = "Temp".into()),
        ),
        (
            "series_prefix",
            Box::new(|c| c.series_prefix = Some("a/b".into())),
        ),
        (
            "registers[1].name",
            Box::new(|c| c.registers.push(c.registers[0].clone())),
        ),
        (
            "registers[0].scale",
            Box::new(|c| c.registers[0].scale = f64::NAN),
        ),
        (
            "registers[0].scale",
            Box::new(|c| c.registers[0].scale = 0.0),
        ),
        (
            "registers[0].offset",
            Box::new(|c| c.registers[0].offset = f64::INFINITY),
        ),
        (
            "registers[0].address",
            Box::new(|c| {
                c.registers[0].address = 65535;
                c.registers[0].data_type = Some(RegisterType::U32);
            }),
        ),
        (
            "registers[0].type",
            Box::new(|c| {
                c.registers[0].function = RegisterFunction::Coil;
                c.registers[0].data_type = Some(RegisterType::F32);
            }),
        ),
    ];
    for (key, mutate) in cases {
        let mut c = ok();
        mutate(&mut c);
        match c.validate() {
            Err(SourceError::Config { key: got, .. }) => assert_eq!(got, key),
            other => panic!("{key}: {other:?}"),
        }
    }
    let mut rtu = ModbusRtuConfig::new("/dev/ttyUSB0", 0, ok().registers);
    assert!(matches!(rtu.validate(), Err(SourceError::Config { key, .. }) if key == "unit_id"));
    rtu.unit_id = 1;
    rtu.baud = 7;
    assert!(matches!(rtu.validate(), Err(SourceError::Config { key, .. }) if key == "baud"));
}
