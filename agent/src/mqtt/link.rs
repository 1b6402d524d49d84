//! The connection: owns the rumqttc event loop, connects with backoff, and turns what
//! happens into [`LinkEvent`]s for the MQTT task.
//!
//! Every connection attempt gets a fresh `AsyncClient`/`EventLoop` pair and a generation
//! number. A fresh pair means nothing submitted for an old connection can leak into a new
//! one: after a reconnect the task republishes from its cursor instead of relying on
//! rumqttc's retransmission queue (also with a persistent session, `clean_session = false`:
//! a republished message is a new message to the broker, counted as a possible duplicate).
//! Incoming messages are acknowledged manually, by the task, once what they carry is
//! committed (acknowledged means durable). This loop never waits on the
//! task's requests (the task only uses `try_*` calls), so the two cannot deadlock.

use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::MqttError;
use super::config::{BrokerUrl, MqttConfig};
use crate::section::InvalidValue;

/// What the connection reports to the MQTT task, tagged with its generation.
#[derive(Debug)]
pub enum LinkEvent {
    /// CONNACK received: `client` submits requests to this connection.
    Connected {
        /// Connection generation.
        generation: u64,
        /// Handle for publishing and subscribing on this connection.
        client: AsyncClient,
    },
    /// The connection broke (or could not be established after having been up).
    Disconnected {
        /// Connection generation.
        generation: u64,
        /// Why.
        error: String,
    },
    /// The next submitted publish was written with this packet id (0 for QoS 0).
    Published {
        /// Connection generation.
        generation: u64,
        /// Packet id.
        pkid: u16,
    },
    /// PUBACK received.
    PubAck {
        /// Connection generation.
        generation: u64,
        /// Packet id.
        pkid: u16,
    },
    /// A message arrived on a subscribed topic; acknowledge it on `generation`'s client once
    /// handled.
    Message {
        /// Connection generation.
        generation: u64,
        /// The message.
        publish: rumqttc::Publish,
    },
    /// The DISCONNECT the task asked for was sent; the loop has ended.
    Closed,
}

/// Everything needed to open connections.
#[derive(Clone)]
pub struct LinkSettings {
    options: MqttOptions,
    /// Capacity of rumqttc's request channel.
    pub request_capacity: usize,
    backoff_max: Duration,
}

impl LinkSettings {
    /// Connection settings from the config; `status_topic` carries the last will `offline`.
    pub fn new(
        cfg: &MqttConfig,
        device: &str,
        status_topic: &str,
    ) -> Result<LinkSettings, MqttError> {
        let url = BrokerUrl::parse(&cfg.url)
            .map_err(|detail| MqttError::Config(InvalidValue::new("mqtt.url", detail)))?;
        let mut o = MqttOptions::new(cfg.client_id_for(device), url.host.clone(), url.port);
        o.set_keep_alive(cfg.keepalive);
        o.set_clean_session(cfg.clean_session);
        // PUBACK only after the store committed what a message carries (the task acks).
        o.set_manual_acks(true);
        o.set_inflight(u16::try_from(cfg.inflight).unwrap_or(u16::MAX));
        o.set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes);
        o.set_last_will(LastWill::new(
            status_topic,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(user) = &cfg.username {
            o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
        }
        if url.tls {
            o.set_transport(Transport::tls_with_config(tls(cfg)?));
        }
        Ok(LinkSettings {
            options: o,
            request_capacity: cfg.inflight + 256,
            backoff_max: cfg.reconnect_backoff_max,
        })
    }
}

/// rustls with the ring provider; roots from `ca_file` or the system store; the client
/// certificate `client_cert`/`client_key` when given.
fn tls(cfg: &MqttConfig) -> Result<TlsConfiguration, MqttError> {
    let tls_error = |e: crate::tls::TlsError| MqttError::Tls(e.to_string());
    let roots = crate::tls::roots("mqtt.ca_file", cfg.ca_file.as_deref()).map_err(tls_error)?;
    let auth = crate::tls::ClientAuth::load(
        "mqtt",
        cfg.client_cert.as_deref(),
        cfg.client_key.as_deref(),
    )
    .map_err(tls_error)?;
    let config = crate::tls::client_config(roots, auth).map_err(tls_error)?;
    Ok(TlsConfiguration::Rustls(config))
}

/// Connects, reconnects with doubling backoff (250 ms up to the configured maximum, with
/// jitter) and forwards events until `stop` is cancelled, the task asks for a disconnect, or
/// the task is gone.
pub async fn link_loop(
    settings: LinkSettings,
    events: mpsc::Sender<LinkEvent>,
    stop: CancellationToken,
) {
    let first_backoff = Duration::from_millis(250);
    let mut backoff = first_backoff;
    let mut generation = 0u64;
    let mut failures = 0u64;
    let target = format!(
        "{}:{}",
        settings.options.broker_address().0,
        settings.options.broker_address().1
    );
    while !stop.is_cancelled() {
        generation += 1;
        let (client, mut eventloop) =
            AsyncClient::new(settings.options.clone(), settings.request_capacity);
        let mut connected = false;
        loop {
            let polled = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                polled = eventloop.poll() => polled,
            };
            let event = match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    failures = 0;
                    backoff = first_backoff;
                    Some(LinkEvent::Connected {
                        generation,
                        client: client.clone(),
                    })
                }
                Ok(Event::Incoming(Packet::Publish(p))) => Some(LinkEvent::Message {
                    generation,
                    publish: p,
                }),
                Ok(Event::Incoming(Packet::PubAck(a))) => Some(LinkEvent::PubAck {
                    generation,
                    pkid: a.pkid,
                }),
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    Some(LinkEvent::Published { generation, pkid })
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    let _ = events.send(LinkEvent::Closed).await;
                    return;
                }
                Ok(_) => None,
                Err(e) => {
                    if connected {
                        if events
                            .send(LinkEvent::Disconnected {
                                generation,
                                error: e.to_string(),
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    } else {
                        failures += 1;
                        if failures == 1 {
                            match crate::tls::describe_handshake_error(&e) {
                                Some(tls) => tracing::warn!(
                                    "MQTT broker {target}: {tls}; retrying with backoff"
                                ),
                                None => tracing::warn!(
                                    "MQTT broker {target} unreachable: {e}; retrying with backoff"
                                ),
                            }
                        } else {
                            tracing::debug!("MQTT broker {target} still unreachable: {e}");
                        }
                    }
                    break;
                }
            };
            if let Some(ev) = event
                && events.send(ev).await.is_err()
            {
                return;
            }
        }
        drop(eventloop);
        let jitter = Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 4));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(settings.backoff_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtts_ca_file_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MqttConfig {
            url: "mqtts://broker.local:8883".into(),
            ca_file: Some(dir.path().join("missing.pem")),
            ..MqttConfig::default()
        };
        let e = LinkSettings::new(&cfg, "dev", "kdelta/dev/status")
            .err()
            .expect("missing CA file refused")
            .to_string();
        assert!(
            e.contains("mqtt.ca_file") && e.contains("missing.pem"),
            "{e}"
        );

        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let cfg = MqttConfig {
            ca_file: Some(dir.path().join("empty.pem")),
            ..cfg
        };
        let e = LinkSettings::new(&cfg, "dev", "kdelta/dev/status")
            .err()
            .expect("empty CA file refused")
            .to_string();
        assert!(e.contains("no certificate"), "{e}");
    }
}
