//! Decoder throughput in bytes of input per second, on corpora shaped like real devices: a GPS
//! receiver's sentence mix, an Arduino's JSON and key=value lines, a logger's CSV rows.
//!
//! Run: `cargo bench -p kdelta-sensors --bench decoders`. Figures are in the crate README.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kdelta_sensors::decode::{Decoder, DecoderOptions, LineDecoder, LineFormat};

const LINES: usize = 1000;
const NOW: i64 = 1_700_000_000_000;

fn nmea_sentence(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}").into_bytes()
}

/// What a receiver sends each second: GGA, RMC and (ignored but still checksummed) GSV.
fn nmea_corpus() -> Vec<Vec<u8>> {
    (0..LINES)
        .map(|i| {
            let min = 7.0 + (i % 100) as f64 * 0.001;
            match i % 3 {
                0 => nmea_sentence(&format!(
                    "GPGGA,1235{:02}.00,48{min:07.4},N,01131.0000,E,1,08,0.9,545.4,M,46.9,M,,",
                    i % 60
                )),
                1 => nmea_sentence(&format!(
                    "GNRMC,1235{:02}.00,A,48{min:07.4},N,01131.0000,E,022.4,084.4,230394,003.1,W",
                    i % 60
                )),
                _ => nmea_sentence(
                    "GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00",
                ),
            }
        })
        .collect()
}

fn json_corpus() -> Vec<Vec<u8>> {
    (0..LINES)
        .map(|i| {
            format!(
                r#"{{"ts": {}, "temp": {:.2}, "hum": {:.1}, "pressure": 1013.25, "env": {{"co2": {}, "ok": true}}, "fw": "1.2.3"}}"#,
                1_700_000_000 + i,
                20.0 + (i % 50) as f64 * 0.1,
                40.0 + (i % 20) as f64,
                400 + i % 100
            )
            .into_bytes()
        })
        .collect()
}

/// The first line is the header, as a logger sends it after boot.
fn csv_corpus() -> Vec<Vec<u8>> {
    let mut lines = vec![b"ts,temp,hum,pressure,co2".to_vec()];
    lines.extend((0..LINES).map(|i| {
        format!(
            "{},{:.2},{:.1},1013.25,{}",
            1_700_000_000 + i,
            20.0 + (i % 50) as f64 * 0.1,
            40.0 + (i % 20) as f64,
            400 + i % 100
        )
        .into_bytes()
    }));
    lines
}

fn key_value_corpus() -> Vec<Vec<u8>> {
    (0..LINES)
        .map(|i| {
            format!(
                "temp={:.2} hum={:.1} pressure=1013.25 co2={} status=ok",
                20.0 + (i % 50) as f64 * 0.1,
                40.0 + (i % 20) as f64,
                400 + i % 100
            )
            .into_bytes()
        })
        .collect()
}

fn bench_format(c: &mut Criterion, name: &str, format: LineFormat, corpus: Vec<Vec<u8>>) {
    let bytes: usize = corpus.iter().map(|l| l.len() + 1).sum(); // + the newline on the wire
    let mut check = Decoder::new(format, DecoderOptions::new("/dev/ttyUSB0", "bench"));
    for line in &corpus {
        if let Err(e) = check.decode(line, NOW) {
            panic!("{name} corpus line does not decode: {e}");
        }
    }
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut decoder = Decoder::new(format, DecoderOptions::new("/dev/ttyUSB0", "bench"));
            let mut readings = 0;
            for line in &corpus {
                readings += decoder.decode(black_box(line), NOW).map_or(0, |r| r.len());
            }
            black_box(readings)
        })
    });
    group.finish();
}

fn decoders(c: &mut Criterion) {
    bench_format(c, "nmea", LineFormat::Nmea, nmea_corpus());
    bench_format(c, "json_lines", LineFormat::JsonLines, json_corpus());
    bench_format(c, "csv", LineFormat::Csv, csv_corpus());
    bench_format(c, "key_value", LineFormat::KeyValue, key_value_corpus());
}

criterion_group!(benches, decoders);
criterion_main!(benches);
