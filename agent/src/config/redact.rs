//! Secrets out of sight: a copy of a [`Config`] with every secret value replaced by
//! `<redacted>` (API and sync tokens, outbound peer tokens, the MQTT password, the password
//! in `store.url`), for
//! `kdelta config check` and anything else that prints a configuration. Token digests
//! (`token_sha256`) are not secrets and stay; file paths stay.

use super::Config;

/// What a secret is shown as.
pub const REDACTED: &str = "<redacted>";

/// `config` with its secrets replaced by [`REDACTED`].
pub fn redacted(config: &Config) -> Config {
    let mut c = config.clone();
    let hide = |s: &mut String| *s = REDACTED.to_owned();
    for t in &mut c.api.tokens {
        t.token.as_mut().map(hide);
    }
    for t in &mut c.sync.accept_tokens {
        t.token.as_mut().map(hide);
    }
    for p in &mut c.sync.peers {
        p.token.as_mut().map(hide);
    }
    c.mqtt.password.as_mut().map(hide);
    if let Some(url) = &mut c.store.url {
        *url = crate::backend::redact_url(url, REDACTED);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_is_replaced() {
        let text = r#"
            [api]
            tokens = [{ name = "ops", token = "api-secret-0123456789", scopes = ["admin"] }]
            [sync]
            accept_tokens = [{ name = "dev", token = "sync-secret-0123456789" }]
            peers = [{ name = "hub", url = "ws://hub:7878", token = "peer-secret-0123456789" }]
            [mqtt]
            username = "kdelta"
            password = "mqtt-secret-0123456789"
            [store]
            backend = "postgres"
            url = "postgres://kdelta:pg-secret-0123456789@db.lan:5432/hub?sslmode=verify-full"
        "#;
        let config: Config = toml::from_str(text).unwrap();
        let shown = toml::to_string(&redacted(&config)).unwrap();
        for secret in [
            "api-secret",
            "sync-secret",
            "peer-secret",
            "mqtt-secret",
            "pg-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        assert_eq!(shown.matches(REDACTED).count(), 5, "{shown}");
        assert!(
            shown.contains("kdelta:<redacted>@db.lan:5432/hub"),
            "{shown}"
        );
        assert!(shown.contains("kdelta"), "the user name is not a secret");
    }
}
