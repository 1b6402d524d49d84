//! Tests of the NMEA decoder: reference sentences, checksum handling, and generated sentences
//! that must decode to the coordinates they were built from.

use super::*;
use proptest::prelude::*;

const NOW: i64 = 42;

fn decoder() -> NmeaDecoder {
    NmeaDecoder::new(DecoderOptions::new("/dev/ttyAMA0", "gps"))
}

/// `$body*hh` with the correct checksum.
fn sentence(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}")
}

fn value(out: &[Reading], series: &str) -> Option<f64> {
    out.iter().find(|r| r.series == series).map(|r| r.value)
}

#[test]
fn reference_gga() {
    // The textbook example sentence, checksum as published.
    let line = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47";
    let out = decoder().decode(line, NOW).unwrap();
    let series: Vec<&str> = out.iter().map(|r| r.series.as_str()).collect();
    assert_eq!(
        series,
        [
            "gps.fix_quality",
            "gps.satellites",
            "gps.latitude",
            "gps.longitude",
            "gps.altitude",
            "gps.hdop"
        ]
    );
    assert!((value(&out, "gps.latitude").unwrap() - (48.0 + 7.038 / 60.0)).abs() < 1e-9);
    assert!((value(&out, "gps.longitude").unwrap() - (11.0 + 31.0 / 60.0)).abs() < 1e-9);
    assert_eq!(value(&out, "gps.altitude"), Some(545.4));
    assert_eq!(value(&out, "gps.fix_quality"), Some(1.0));
    assert_eq!(value(&out, "gps.satellites"), Some(8.0));
    assert!(out.iter().all(|r| r.ts_ms == NOW));
    let alt = out.iter().find(|r| r.series == "gps.altitude").unwrap();
    assert_eq!(alt.unit.as_deref(), Some("m"));
}

#[test]
fn reference_rmc_with_speed_in_metres_per_second() {
    let line = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A";
    let out = decoder().decode(line, NOW).unwrap();
    assert!((value(&out, "gps.speed").unwrap() - 22.4 * 0.514_444).abs() < 1e-4);
    assert_eq!(value(&out, "gps.course"), Some(84.4));
    let speed = out.iter().find(|r| r.series == "gps.speed").unwrap();
    assert_eq!(speed.unit.as_deref(), Some("m/s"));
    assert!(value(&out, "gps.latitude").is_some());
}

#[test]
fn south_west_are_negative_and_any_talker_works() {
    for talker in ["GP", "GN", "GL", "GA", "BD"] {
        let line = sentence(&format!(
            "{talker}GGA,000000,3351.000,S,15112.000,W,2,11,1.0,10.0,M,,M,,"
        ));
        let out = decoder().decode(line.as_bytes(), NOW).unwrap();
        assert!(
            (value(&out, "gps.latitude").unwrap() + 33.85).abs() < 1e-9,
            "{talker}"
        );
        assert!(
            (value(&out, "gps.longitude").unwrap() + 151.2).abs() < 1e-9,
            "{talker}"
        );
    }
}

#[test]
fn void_rmc_and_no_fix_gga_report_no_position() {
    let void = sentence("GPRMC,123519,V,,,,,,,230394,,");
    assert!(decoder().decode(void.as_bytes(), NOW).unwrap().is_empty());
    let no_fix = sentence("GPGGA,123519,,,,,0,00,,,M,,M,,");
    let out = decoder().decode(no_fix.as_bytes(), NOW).unwrap();
    assert_eq!(value(&out, "gps.fix_quality"), Some(0.0));
    assert_eq!(value(&out, "gps.satellites"), Some(0.0));
    assert_eq!(value(&out, "gps.latitude"), None);
}

#[test]
fn other_sentences_are_ignored() {
    let gsv = sentence("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00");
    assert!(decoder().decode(gsv.as_bytes(), NOW).unwrap().is_empty());
    let proprietary = sentence("PUBX,00,081350.00");
    assert!(
        decoder()
            .decode(proprietary.as_bytes(), NOW)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bad_checksum_is_a_checksum_error_naming_the_port() {
    let line = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48";
    match decoder().decode(line, NOW) {
        Err(SourceError::Checksum { device, detail }) => {
            assert_eq!(device, "/dev/ttyAMA0");
            assert!(detail.contains("48") && detail.contains("47"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_sentences_are_parse_errors() {
    let mut d = decoder();
    let bad = [
        b"GPGGA,1,2*00".to_vec(),             // no $
        b"$GPGGA,123519,4807.038,N".to_vec(), // no checksum
        b"$GPGGA,1*4".to_vec(),               // short checksum
        b"$GPGGA,1*ZZ".to_vec(),              // not hex
        sentence("GPGGA,1,4807.038,X,01131.000,E,1,08,,,M,,M,,").into_bytes(), // hemisphere
        sentence("GPGGA,1,4867.038,N,01131.000,E,1,08,,,M,,M,,").into_bytes(), // 67 minutes
        sentence("GPGGA,1,9107.038,N,01131.000,E,1,08,,,M,,M,,").into_bytes(), // > 90°
        sentence("GPGGA,1,NaN,N,01131.000,E,1,08,,,M,,M,,").into_bytes(),
        sentence("GPGGA,1,4807.038,N,inf,E,1,08,,,M,,M,,").into_bytes(),
        sentence("GPGGA,1,4807.038,N,01131.000,E,1,08,,1e999,M,,M,,").into_bytes(),
        sentence("GPRMC,1,X,,,,,,,,,").into_bytes(),
        b"$GPGGA,\xff*00".to_vec(),
    ];
    for line in bad {
        match d.decode(&line, NOW) {
            Err(SourceError::Parse { device, .. }) => assert_eq!(device, "/dev/ttyAMA0"),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(&line)),
        }
    }
}

/// Formats decimal degrees given as whole degrees plus micro-minutes, the exact form a
/// receiver prints, so the expected value is known without rounding trouble.
fn nmea_coordinate(degrees: u32, micro_minutes: u32, degree_digits: usize) -> String {
    format!(
        "{degrees:0degree_digits$}{:02}.{:06}",
        micro_minutes / 1_000_000,
        micro_minutes % 1_000_000
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decoder().decode(&bytes, NOW);
    }

    #[test]
    fn arbitrary_checksummed_bodies_never_panic(body in "[ -~]{0,120}") {
        let _ = decoder().decode(sentence(&body).as_bytes(), NOW);
        let gga = sentence(&format!("GPGGA,{body}"));
        let _ = decoder().decode(gga.as_bytes(), NOW);
        let rmc = sentence(&format!("GNRMC,1,A,{body}"));
        let _ = decoder().decode(rmc.as_bytes(), NOW);
    }

    #[test]
    fn generated_sentences_decode_to_their_coordinates(
        lat_deg in 0u32..90, lat_umin in 0u32..60_000_000, north in any::<bool>(),
        lon_deg in 0u32..180, lon_umin in 0u32..60_000_000, east in any::<bool>(),
        knots in 0u32..100_000, talker in "(GP|GN|GL|GA)", rmc in any::<bool>(),
    ) {
        let lat = f64::from(lat_deg) + f64::from(lat_umin) / 1e6 / 60.0;
        let lon = f64::from(lon_deg) + f64::from(lon_umin) / 1e6 / 60.0;
        let lat_text = nmea_coordinate(lat_deg, lat_umin, 2);
        let lon_text = nmea_coordinate(lon_deg, lon_umin, 3);
        let (ns, ew) = (if north { "N" } else { "S" }, if east { "E" } else { "W" });
        let body = if rmc {
            format!("{talker}RMC,120000.00,A,{lat_text},{ns},{lon_text},{ew},{}.{:02},,010125,,,A",
                knots / 100, knots % 100)
        } else {
            format!("{talker}GGA,120000.00,{lat_text},{ns},{lon_text},{ew},1,09,1.0,12.5,M,,M,,")
        };
        let out = decoder().decode(sentence(&body).as_bytes(), NOW).unwrap();
        let want_lat = if north { lat } else { -lat };
        let want_lon = if east { lon } else { -lon };
        prop_assert!((value(&out, "gps.latitude").unwrap() - want_lat).abs() < 1e-6);
        prop_assert!((value(&out, "gps.longitude").unwrap() - want_lon).abs() < 1e-6);
        if rmc {
            let speed = f64::from(knots) / 100.0 * MS_PER_KNOT;
            prop_assert!((value(&out, "gps.speed").unwrap() - speed).abs() < 1e-9);
        }
    }
}
