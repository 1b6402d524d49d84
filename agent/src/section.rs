//! What every configuration section shares: the shape of a refused value. Each section's
//! config type lives with the module that owns it (`[api]` in `api`, `[mqtt]` in `mqtt`,
//! `[sync]` in `peers`, …) and its `validate()` returns an [`InvalidValue`] naming the dotted
//! key; `config/` layers the sections, adds the checks that span sections, and renders the
//! error with where the value came from. A leaf: it uses no other module of the agent.

/// A value a section's `validate()` refused: the dotted key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}`: {detail}")]
pub struct InvalidValue {
    /// Dotted key, e.g. `ingest.batch_max_readings`, `sources[1].interval`, `mqtt.qos`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub detail: String,
}

impl InvalidValue {
    /// The value at `key` is refused because of `detail`.
    pub fn new(key: impl Into<String>, detail: impl Into<String>) -> InvalidValue {
        InvalidValue {
            key: key.into(),
            detail: detail.into(),
        }
    }
}

/// `Err(InvalidValue)` for `key`, the shorthand every `validate()` uses.
pub fn refuse<T>(key: impl Into<String>, detail: impl Into<String>) -> Result<T, InvalidValue> {
    Err(InvalidValue::new(key, detail))
}
