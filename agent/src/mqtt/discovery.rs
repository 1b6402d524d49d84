//! Home Assistant MQTT discovery: the retained config message of one series (an MQTT
//! `sensor`), with `device_class` and `state_class` inferred from the unit and the name.
//!
//! Follows Home Assistant's documented discovery format
//! (`<discovery_prefix>/sensor/<node_id>/<object_id>/config`): full key names (no
//! abbreviations), `unique_id`, a `device` block, `state_topic` with a `value_template`
//! reading the JSON body kdelta publishes, and availability on the device's status topic.
//! Removal (an empty retained config) is not sent: the store cannot delete series yet.

use serde_json::{Value, json};

use super::topics::{Topics, object_id};

/// `(device_class, state_class)` for a unit and series name; `None` device class when
/// nothing fits (Home Assistant then shows a plain numeric sensor).
pub fn classify(unit: Option<&str>, series: &str) -> (Option<&'static str>, &'static str) {
    let name = series.to_ascii_lowercase();
    let has = |w: &str| name.contains(w);
    let device_class = match unit.map(str::trim) {
        Some("°C" | "°F" | "K" | "C" | "F") => Some("temperature"),
        Some("%") if has("humid") => Some("humidity"),
        Some("%") if has("battery") => Some("battery"),
        Some("%") if has("moisture") => Some("moisture"),
        Some("hPa" | "Pa" | "kPa" | "mbar" | "bar" | "psi" | "inHg" | "mmHg") => Some("pressure"),
        Some("V" | "mV" | "kV") => Some("voltage"),
        Some("A" | "mA") => Some("current"),
        Some("W" | "kW" | "MW") => Some("power"),
        Some("Wh" | "kWh" | "MWh") => Some("energy"),
        Some("VA" | "kVA") => Some("apparent_power"),
        Some("var" | "kvar") => Some("reactive_power"),
        Some("Hz" | "kHz" | "MHz" | "GHz") => Some("frequency"),
        Some("lx") => Some("illuminance"),
        Some("ppm") if has("co2") => Some("carbon_dioxide"),
        Some("ppm") if has("co") => Some("carbon_monoxide"),
        Some("ppm" | "ppb") if has("voc") => Some("volatile_organic_compounds_parts"),
        Some("µg/m³") if has("pm25") || has("pm2.5") || has("pm2_5") => Some("pm25"),
        Some("µg/m³") if has("pm10") => Some("pm10"),
        Some("µg/m³") if has("pm1") => Some("pm1"),
        Some("dBm" | "dB") if has("rssi") || has("signal") => Some("signal_strength"),
        Some("B" | "kB" | "KiB" | "MB" | "MiB" | "GB" | "GiB") => Some("data_size"),
        Some("s" | "ms" | "min" | "h" | "d") => Some("duration"),
        Some("m³" | "L") if has("water") => Some("water"),
        Some("m³") if has("gas") => Some("gas"),
        Some("m/s" | "km/h" | "mph") => {
            Some("wind_speed").filter(|_| has("wind")).or(Some("speed"))
        }
        Some("mm" | "cm" | "m" | "km") => Some("distance"),
        _ => None,
    };
    let state_class = match device_class {
        Some("energy" | "water" | "gas") => "total_increasing",
        _ => "measurement",
    };
    (device_class, state_class)
}

/// The discovery config of `series` (retained on [`Topics::discovery`]).
pub fn config(topics: &Topics, device: &str, series: &str, unit: Option<&str>) -> Value {
    let (device_class, state_class) = classify(unit, series);
    let mut cfg = json!({
        "name": series,
        "unique_id": format!("kdelta_{}_{}", topics.node_id, object_id(series)),
        "object_id": format!("{}_{}", topics.node_id, object_id(series)),
        "state_topic": topics.series(series),
        "value_template": "{{ value_json.value }}",
        "state_class": state_class,
        "availability_topic": topics.status(),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [format!("kdelta_{}", topics.node_id)],
            "name": device,
            "manufacturer": "kdelta",
            "model": "kdelta edge agent",
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
        "origin": {
            "name": "kdelta",
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
    });
    if let Some(obj) = cfg.as_object_mut() {
        if let Some(u) = unit {
            obj.insert("unit_of_measurement".into(), json!(u));
        }
        if let Some(dc) = device_class {
            obj.insert("device_class".into(), json!(dc));
        }
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_from_units() {
        assert_eq!(
            classify(Some("°C"), "greenhouse.temp"),
            (Some("temperature"), "measurement")
        );
        assert_eq!(
            classify(Some("%"), "greenhouse.humidity"),
            (Some("humidity"), "measurement")
        );
        assert_eq!(classify(Some("%"), "system.cpu"), (None, "measurement"));
        assert_eq!(
            classify(Some("hPa"), "bme280.pressure"),
            (Some("pressure"), "measurement")
        );
        assert_eq!(classify(Some("V"), "x"), (Some("voltage"), "measurement"));
        assert_eq!(classify(Some("A"), "x"), (Some("current"), "measurement"));
        assert_eq!(classify(Some("W"), "x"), (Some("power"), "measurement"));
        assert_eq!(
            classify(Some("kWh"), "x"),
            (Some("energy"), "total_increasing")
        );
        assert_eq!(
            classify(Some("lx"), "x"),
            (Some("illuminance"), "measurement")
        );
        assert_eq!(
            classify(Some("ppm"), "office.co2"),
            (Some("carbon_dioxide"), "measurement")
        );
        assert_eq!(classify(None, "x"), (None, "measurement"));
    }

    #[test]
    fn config_fields() {
        let t = Topics::new("kdelta", "pi", "homeassistant");
        let c = config(&t, "pi", "greenhouse.temp", Some("°C"));
        assert_eq!(c["unique_id"], "kdelta_pi_greenhouse_temp");
        assert_eq!(c["state_topic"], "kdelta/pi/greenhouse.temp");
        assert_eq!(c["device_class"], "temperature");
        assert_eq!(c["unit_of_measurement"], "°C");
        assert_eq!(c["device"]["identifiers"][0], "kdelta_pi");
        let c = config(&t, "pi", "x", None);
        assert!(c.get("unit_of_measurement").is_none() && c.get("device_class").is_none());
    }
}
