//! Tests of the serial config: TOML shape, defaults, and validation naming the key.

use super::*;

/// Mirrors how the agent embeds source configs: an internally tagged enum.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Tagged {
    Serial(SerialConfig),
}

fn parse(toml_text: &str) -> Result<SerialConfig, String> {
    toml::from_str::<Tagged>(toml_text)
        .map(|Tagged::Serial(c)| c)
        .map_err(|e| e.to_string())
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse("kind = \"serial\"\nport = \"/dev/ttyUSB0\"\nformat = \"nmea\"").unwrap();
    assert_eq!(c, SerialConfig::new("/dev/ttyUSB0", LineFormat::Nmea));
    assert_eq!(c.baud, 9600);
    assert_eq!(c.data_bits, 8);
    assert_eq!(c.parity, Parity::None);
    assert_eq!(c.stop_bits, 1);
    assert_eq!(c.max_line_bytes, 4096);
    assert_eq!(c.reopen_backoff_max, Duration::from_secs(30));
    assert_eq!(c.effective_prefix(), "gps");
    assert_eq!(c.display_name(), "serial");
    c.validate().unwrap();
}

#[test]
fn full_config_parses() {
    let c = parse(
        r#"
        kind = "serial"
        name = "greenhouse"
        port = "/dev/serial/by-id/usb-arduino"
        baud = 115200
        data_bits = 7
        parity = "even"
        stop_bits = 2
        format = "csv"
        csv_delimiter = ";"
        csv_columns = ["ts", "temp", "_"]
        units = { temp = "°C" }
        max_line_bytes = 512
        reopen_backoff_max = "5s"
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.parity, Parity::Even);
    assert_eq!(c.reopen_backoff_max, Duration::from_secs(5));
    assert_eq!(c.effective_prefix(), "greenhouse");
    let opts = c.decoder_options();
    assert_eq!(opts.csv_delimiter, b';');
    assert_eq!(opts.max_line_bytes, 512);
    assert_eq!(opts.device, "/dev/serial/by-id/usb-arduino");
    assert_eq!(opts.units["temp"], "°C");
}

#[test]
fn unknown_keys_and_bad_enums_are_rejected() {
    let err = parse("kind = \"serial\"\nport = \"/dev/x\"\nformat = \"csv\"\nbaudrate = 9600")
        .unwrap_err();
    assert!(err.contains("baudrate"), "{err}");
    let err = parse("kind = \"serial\"\nport = \"/dev/x\"\nformat = \"xml\"").unwrap_err();
    assert!(err.contains("xml"), "{err}");
    let err = parse("kind = \"serial\"\nport = \"/dev/x\"\nformat = \"csv\"\nparity = \"mark\"")
        .unwrap_err();
    assert!(err.contains("mark"), "{err}");
}

/// A change that makes a valid config invalid.
type Mutation = Box<dyn Fn(&mut SerialConfig)>;

#[test]
fn validate_names_the_key() {
    let base = SerialConfig::new("/dev/ttyS0", LineFormat::Csv);
    let cases: Vec<(&str, Mutation)> = vec![
        ("port", Box::new(|c| c.port = PathBuf::new())),
        ("baud", Box::new(|c| c.baud = 0)),
        ("data_bits", Box::new(|c| c.data_bits = 9)),
        ("stop_bits", Box::new(|c| c.stop_bits = 3)),
        ("max_line_bytes", Box::new(|c| c.max_line_bytes = 1)),
        (
            "reopen_backoff_max",
            Box::new(|c| c.reopen_backoff_max = Duration::ZERO),
        ),
        ("name", Box::new(|c| c.name = Some("has space".into()))),
        (
            "series_prefix",
            Box::new(|c| c.series_prefix = Some("a b".into())),
        ),
        (
            "series_prefix",
            Box::new(|c| c.series_prefix = Some("Lab".into())),
        ),
        (
            "csv_columns",
            Box::new(|c| c.csv_columns = Some(vec!["Temp".into()])),
        ),
        ("csv_delimiter", Box::new(|c| c.csv_delimiter = Some('é'))),
        ("csv_delimiter", Box::new(|c| c.csv_delimiter = Some('"'))),
        ("csv_columns", Box::new(|c| c.csv_columns = Some(vec![]))),
        (
            "csv_columns",
            Box::new(|c| c.csv_columns = Some(vec!["a".into(), "a".into()])),
        ),
        (
            "csv_columns",
            Box::new(|c| c.csv_columns = Some(vec!["ts".into(), "_".into()])),
        ),
        (
            "csv_columns",
            Box::new(|c| c.csv_columns = Some(vec!["".into()])),
        ),
    ];
    for (key, mutate) in cases {
        let mut c = base.clone();
        mutate(&mut c);
        match c.validate() {
            Err(SourceError::Config { key: got, .. }) => assert_eq!(got, key),
            other => panic!("{key}: {other:?}"),
        }
    }
    let mut c = SerialConfig::new("/dev/ttyS0", LineFormat::JsonLines);
    c.name = Some("Greenhouse-1".into());
    c.validate().unwrap();
    assert_eq!(c.effective_prefix(), "greenhouse-1");
    c.series_prefix = Some(String::new());
    c.validate().unwrap();
    assert_eq!(c.effective_prefix(), "");
    c.csv_columns = Some(vec!["a".into()]);
    assert!(matches!(c.validate(), Err(SourceError::Config { key, .. }) if key == "csv_columns"));
}

#[test]
fn source_config_kinds_build_through_the_factories() {
    use crate::{SourceConfig, build_polled, build_streaming};
    let parse = |t: &str| toml::from_str::<SourceConfig>(t).unwrap();
    let serial =
        parse("kind = \"serial\"\nname = \"gps\"\nport = \"/dev/ttyAMA0\"\nformat = \"nmea\"");
    assert_eq!(
        (serial.kind(), serial.name(), serial.interval()),
        ("serial", "gps", None)
    );
    assert!(build_polled(&serial).unwrap().is_none());
    assert_eq!(build_streaming(&serial).unwrap().unwrap().name(), "gps");

    let tcp = parse(
        "kind = \"modbus_tcp\"\naddress = \"127.0.0.1:1502\"\ninterval = \"2s\"\n\
         registers = [{ name = \"t\", address = 0 }]",
    );
    assert_eq!((tcp.kind(), tcp.name()), ("modbus_tcp", "modbus_tcp"));
    assert_eq!(tcp.interval(), Some(Duration::from_secs(2)));
    assert!(build_streaming(&tcp).unwrap().is_none());
    assert_eq!(build_polled(&tcp).unwrap().unwrap().name(), "modbus_tcp");

    let rtu = parse(
        "kind = \"modbus_rtu\"\nname = \"meter\"\nport = \"/dev/ttyUSB0\"\nunit_id = 2\n\
         registers = [{ name = \"v\", function = \"input\", address = 0, type = \"f32\" }]",
    );
    assert_eq!(build_polled(&rtu).unwrap().unwrap().name(), "meter");

    let bad = parse("kind = \"serial\"\nport = \"/dev/x\"\nformat = \"csv\"\nbaud = 3");
    match bad.validate_in("sources[1]") {
        Err(SourceError::Config { key, .. }) => assert_eq!(key, "sources[1].baud"),
        other => panic!("{other:?}"),
    }
    assert!(build_streaming(&bad).is_err());
}
