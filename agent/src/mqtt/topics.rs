//! Topic names: the device's own topics under `<prefix>/<device>/`, how a series name becomes
//! one topic level, and topic filters with wildcard captures for the ingest rules. Pure
//! string work, no I/O.

/// The topics of one device.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `<prefix>/<device>`.
    pub base: String,
    /// `<discovery_prefix>`.
    pub discovery_prefix: String,
    /// Home Assistant `node_id`: the device name reduced to `[a-zA-Z0-9_-]`.
    pub node_id: String,
}

/// Levels under `<prefix>/<device>/` that are not series: a series with one of these names
/// is published as `_<name>`.
const RESERVED: &[&str] = &["status", "batch", "ingest", "docs", "twin"];

impl Topics {
    /// Topics for `device` under `prefix`.
    pub fn new(prefix: &str, device: &str, discovery_prefix: &str) -> Topics {
        Topics {
            base: format!("{prefix}/{}", level(device)),
            discovery_prefix: discovery_prefix.to_owned(),
            node_id: object_id(device),
        }
    }

    /// Availability: `online` / `offline`, retained.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// Batches of readings.
    pub fn batch(&self) -> String {
        format!("{}/batch", self.base)
    }

    /// State topic of one series.
    pub fn series(&self, series: &str) -> String {
        format!("{}/{}", self.base, series_level(series))
    }

    /// Filter of the ingest topics.
    pub fn ingest_filter(&self) -> String {
        format!("{}/ingest/#", self.base)
    }

    /// Filter of the document commands.
    pub fn docs_set_filter(&self) -> String {
        format!("{}/docs/set/#", self.base)
    }

    /// Where document command results go.
    pub fn docs_result(&self) -> String {
        format!("{}/docs/result", self.base)
    }

    /// Filter of everything under the twin topics (patches are picked out by
    /// [`twin_patch_key`](Self::twin_patch_key)).
    pub fn twin_filter(&self) -> String {
        format!("{}/twin/#", self.base)
    }

    /// Retained state topic of twin `key` (`/` in the key makes topic levels; `+`, `#` and
    /// NUL become `_`).
    pub fn twin(&self, key: &str) -> String {
        let levels: Vec<String> = key.split('/').map(level).collect();
        format!("{}/twin/{}", self.base, levels.join("/"))
    }

    /// Where the outcome of a twin patch goes.
    pub fn twin_result(&self, key: &str) -> String {
        format!("{}/result", self.twin(key))
    }

    /// The twin key named by a patch topic (`<base>/twin/<key>/patch`).
    pub fn twin_patch_key<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(&self.base)?
            .strip_prefix("/twin/")?
            .strip_suffix("/patch")
            .filter(|k| !k.is_empty())
    }

    /// Home Assistant's birth/last-will topic.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }

    /// Discovery config topic of one series.
    pub fn discovery(&self, series: &str) -> String {
        format!(
            "{}/sensor/{}/{}/config",
            self.discovery_prefix,
            self.node_id,
            object_id(series)
        )
    }

    /// The series named by an ingest topic (`<base>/ingest/<series>`).
    pub fn ingest_series<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(&self.base)?.strip_prefix("/ingest/")
    }

    /// The key named by a command topic (`<base>/docs/set/<key>`).
    pub fn docs_set_key<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(&self.base)?.strip_prefix("/docs/set/")
    }

    /// True for topics this device publishes itself (never ingested, even when a rule's
    /// filter matches them: that would loop).
    pub fn is_own(&self, topic: &str) -> bool {
        topic
            .strip_prefix(&self.base)
            .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    }
}

/// One topic level from free text: `/`, `+`, `#` and NUL become `_`.
pub fn level(text: &str) -> String {
    text.chars()
        .map(|c| {
            if matches!(c, '/' | '+' | '#' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The topic level of a series: [`level`], and `_status` etc. for reserved names.
pub fn series_level(series: &str) -> String {
    let l = level(series);
    if RESERVED.contains(&l.as_str()) {
        format!("_{l}")
    } else {
        l
    }
}

/// A Home Assistant object id: `[a-zA-Z0-9_-]`, everything else becomes `_`.
pub fn object_id(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A parsed MQTT topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    levels: Vec<String>,
}

impl TopicFilter {
    /// Parses a filter: levels separated by `/`; `+` is a whole level; `#` only as the last level.
    pub fn parse(filter: &str) -> Result<TopicFilter, String> {
        if filter.is_empty() || filter.len() > 1024 {
            return Err("a topic filter must have 1 to 1024 characters".into());
        }
        let levels: Vec<String> = filter.split('/').map(str::to_owned).collect();
        for (i, l) in levels.iter().enumerate() {
            let wild = l.contains(['+', '#']);
            if wild && l != "+" && l != "#" {
                return Err(format!("{filter:?}: `+` and `#` must be a whole level"));
            }
            if l == "#" && i + 1 != levels.len() {
                return Err(format!("{filter:?}: `#` must be the last level"));
            }
        }
        Ok(TopicFilter { levels })
    }

    /// The filter text.
    pub fn as_string(&self) -> String {
        self.levels.join("/")
    }

    /// Number of wildcards (`+` and `#`).
    pub fn wildcards(&self) -> usize {
        self.levels
            .iter()
            .filter(|l| *l == "+" || *l == "#")
            .count()
    }

    /// The levels the wildcards matched, in order (`#` as one capture with its `/`), or
    /// `None` when `topic` does not match. As MQTT says, wildcards at the first level do not
    /// match topics starting with `$`.
    pub fn captures<'t>(&self, topic: &'t str) -> Option<Vec<&'t str>> {
        if topic.starts_with('$')
            && matches!(self.levels.first().map(String::as_str), Some("+" | "#"))
        {
            return None;
        }
        let mut caps = Vec::new();
        let mut rest = Some(topic);
        for l in &self.levels {
            if l == "#" {
                // `a/#` also matches `a` itself (an empty capture).
                caps.push(rest.unwrap_or(""));
                return Some(caps);
            }
            let current = rest?;
            let (level, tail) = match current.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (current, None),
            };
            if l == "+" {
                caps.push(level);
            } else if l != level {
                return None;
            }
            rest = tail;
        }
        rest.is_none().then_some(caps)
    }
}

/// Fills a series template: `{n}` is capture `n` (from 1), `{topic}` the topic.
pub fn render(template: &str, topic: &str, caps: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        match name.parse::<usize>() {
            Ok(n) if n >= 1 && n <= caps.len() => out.push_str(caps[n - 1]),
            _ if name == "topic" => out.push_str(topic),
            _ => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_topics() {
        let t = Topics::new("kdelta", "pi 4/b", "homeassistant");
        assert_eq!(t.base, "kdelta/pi 4_b");
        assert_eq!(t.series("greenhouse.temp"), "kdelta/pi 4_b/greenhouse.temp");
        assert_eq!(t.series("a/b+c"), "kdelta/pi 4_b/a_b_c");
        assert_eq!(t.series("status"), "kdelta/pi 4_b/_status");
        assert_eq!(
            t.discovery("greenhouse.temp"),
            "homeassistant/sensor/pi_4_b/greenhouse_temp/config"
        );
        assert_eq!(t.ingest_series("kdelta/pi 4_b/ingest/a/b"), Some("a/b"));
        assert_eq!(t.docs_set_key("kdelta/pi 4_b/docs/set/x/y"), Some("x/y"));
        assert!(t.is_own("kdelta/pi 4_b/x"));
        assert!(!t.is_own("kdelta/pi 4_bx/x"));
    }

    #[test]
    fn filters_capture_wildcards() {
        let f = TopicFilter::parse("tele/+/SENSOR").unwrap();
        assert_eq!(f.captures("tele/plug1/SENSOR"), Some(vec!["plug1"]));
        assert_eq!(f.captures("tele/plug1/STATE"), None);
        assert_eq!(f.captures("tele/plug1/SENSOR/x"), None);
        let f = TopicFilter::parse("zigbee2mqtt/#").unwrap();
        assert_eq!(
            f.captures("zigbee2mqtt/living/room"),
            Some(vec!["living/room"])
        );
        assert_eq!(f.captures("zigbee2mqtt"), Some(vec![""]));
        let f = TopicFilter::parse("+/#").unwrap();
        assert_eq!(f.captures("$SYS/x"), None);
        assert_eq!(f.wildcards(), 2);
        assert!(TopicFilter::parse("a/#/b").is_err());
        assert!(TopicFilter::parse("a/b+").is_err());
        assert!(TopicFilter::parse("").is_err());
    }

    #[test]
    fn templates() {
        assert_eq!(render("shelly.{1}.{2}", "t", &["a", "b"]), "shelly.a.b");
        assert_eq!(render("x.{topic}", "a/b", &[]), "x.a/b");
        assert_eq!(render("x.{9}.{", "t", &["a"]), "x.{9}.{");
    }
}
