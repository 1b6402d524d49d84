//! Failed-authentication throttling: each source address (IPv6 by /64, since one host
//! commonly owns a whole /64) may fail `max_failures` times per `window`; after that it is
//! refused (`429` with `Retry-After`) until its window ends, whatever it presents. Other
//! addresses are not affected. The table is bounded ([`MAX_TRACKED`] addresses): when full,
//! expired entries go first, then the oldest window.
//!
//! Logging is throttled too: the first failure of an address in a window is logged at
//! `warn`, the moment it is blocked once more, and the rest only counted, so a guessing
//! client cannot flood the journal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked at once.
pub const MAX_TRACKED: usize = 4096;

/// The per-address state of one window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Counts failed authentications per address and says who must wait.
#[derive(Debug)]
pub struct AuthThrottle {
    max_failures: u32,
    window: Duration,
    table: Mutex<HashMap<IpAddr, Window>>,
}

/// What [`AuthThrottle::failed`] decided about logging the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAs {
    /// The first failure of this address in its window.
    First,
    /// This failure blocked the address.
    Blocked,
    /// Counted only.
    Quiet,
}

impl AuthThrottle {
    /// A throttle allowing `max_failures` per `window` and address.
    pub fn new(max_failures: u32, window: Duration) -> AuthThrottle {
        AuthThrottle {
            max_failures: max_failures.max(1),
            window,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// How long `addr` must still wait, or `None` when it may try.
    pub fn blocked(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let key = bucket(addr);
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let w = table.get(&key)?;
        let ends = w.started + self.window;
        (w.failures >= self.max_failures && now < ends).then(|| ends - now)
    }

    /// Records a failed authentication from `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) -> LogAs {
        let key = bucket(addr);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !table.contains_key(&key) && table.len() >= MAX_TRACKED {
            let window = self.window;
            table.retain(|_, w| now < w.started + window);
            if table.len() >= MAX_TRACKED
                && let Some(oldest) = table.iter().min_by_key(|(_, w)| w.started).map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        let w = table.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= w.started + self.window {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        match w.failures {
            1 => LogAs::First,
            n if n == self.max_failures => LogAs::Blocked,
            _ => LogAs::Quiet,
        }
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records a failed authentication from `addr` and logs it as [`LogAs`] says: `what`
    /// at warn for the address's first failure in its window and when it gets blocked,
    /// at debug otherwise. The one place API, sync and TLS failures are logged.
    pub fn failed_and_log(&self, addr: IpAddr, what: &str) {
        match self.failed(addr, Instant::now()) {
            LogAs::First => tracing::warn!(
                remote = %addr,
                "{what}; further failures from this address are counted, not logged"
            ),
            LogAs::Blocked => tracing::warn!(
                remote = %addr,
                "{what}: too many failed authentications, refusing this address for up to {}",
                humantime::format_duration(self.window)
            ),
            LogAs::Quiet => tracing::debug!(remote = %addr, "{what}"),
        }
    }

    /// Addresses tracked now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The TLS listener's view: refused client certificates count like bad tokens.
impl crate::tls::FailedAuth for AuthThrottle {
    fn blocked(&self, addr: IpAddr) -> bool {
        AuthThrottle::blocked(self, addr, Instant::now()).is_some()
    }

    fn failed(&self, addr: IpAddr, what: &str) {
        self.failed_and_log(addr, what);
    }
}

/// The throttling key of an address: IPv4 as is, IPv6 by its /64 (IPv4-mapped as IPv4).
pub(crate) fn bucket(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_until_the_window_ends() {
        let t = AuthThrottle::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(t.failed(a, t0), LogAs::First);
        assert_eq!(t.failed(a, t0), LogAs::Quiet);
        assert!(t.blocked(a, t0).is_none());
        assert_eq!(t.failed(a, t0), LogAs::Blocked);
        let wait = t.blocked(a, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(
            t.blocked(b, t0).is_none(),
            "another address is not affected"
        );
        assert!(t.blocked(a, t0 + Duration::from_secs(60)).is_none());
        assert_eq!(t.failed(a, t0 + Duration::from_secs(61)), LogAs::First);
    }

    #[test]
    fn ipv6_counts_by_prefix_and_the_table_is_bounded() {
        let t = AuthThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        t.failed("2001:db8::1".parse().unwrap(), now);
        t.failed("2001:db8::2".parse().unwrap(), now);
        assert!(t.blocked("2001:db8::ffff".parse().unwrap(), now).is_some());
        for i in 0..(MAX_TRACKED as u32 + 100) {
            t.failed(IpAddr::V4(i.into()), now);
        }
        assert!(t.tracked() <= MAX_TRACKED);
    }
}
