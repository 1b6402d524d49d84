//! The connection slots of the API server: which connections are open, which of them are
//! idle (no request in progress: waiting for their first or next request head), and which
//! one gives way when a new connection arrives at a cap. Pure bookkeeping without I/O or
//! time, so the policy is tested on its own; the server loop (`server.rs`) owns the sockets
//! and closes what [`Slots::admit`] hands back.
//!
//! The policy, as in production servers under slowloris (nginx's idle keep-alive reuse,
//! Go's `ReadHeaderTimeout` plus connection shedding): a new connection is accepted at once;
//! at a cap, the connection that has been idle longest gives way for it. A connection is
//! idle from its accept, or from the end of its last response, until its next complete
//! request head; one in the middle of a request (its body, its handler, its response being
//! written, an event stream) is never shed. Only when every connection under the cap is in
//! a request is the new one refused.
//!
//! Two caps: all connections (`api.max_connections`), and the connections of one source
//! address (`api.max_connections_per_address`; IPv6 by /64). The second keeps one host from
//! taking every slot; at it, the address's *own* longest-idle connection gives way, so a
//! flood from one address sheds only its own connections. Connections whose address is
//! `None` (the server passes `None` for loopback) count only towards the first cap.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// A connection's number, unique for the life of a [`Slots`].
pub type ConnId = u64;

/// The cap a new connection met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `api.max_connections`.
    Total,
    /// `api.max_connections_per_address`.
    PerAddress,
}

impl Limit {
    /// The `limit` label of the connection metrics: `total` or `per_address`.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Total => "total",
            Limit::PerAddress => "per_address",
        }
    }

    /// The config key of the cap.
    pub fn key(self) -> &'static str {
        match self {
            Limit::Total => "api.max_connections",
            Limit::PerAddress => "api.max_connections_per_address",
        }
    }
}

/// A connection let in by [`Slots::admit`].
#[derive(Debug)]
pub struct Admitted<T> {
    /// Its number, for [`Slots::start_request`], [`Slots::end_request`] and [`Slots::close`].
    pub id: ConnId,
    /// The connections that gave way for it (at most one per cap), with the cap that made
    /// them: their handles, for the caller to close. They are already out of the slots.
    pub shed: Vec<(T, Limit)>,
}

/// The open connections and their state. `T` is the caller's handle of a connection (the
/// server's: the sender whose drop tells the connection's task to close).
#[derive(Debug)]
pub struct Slots<T> {
    max_total: usize,
    max_per_address: usize,
    /// A logical clock: each change to idle takes the next tick, so "idle longest" is "the
    /// smallest tick" without reading time.
    clock: u64,
    next_id: ConnId,
    open: HashMap<ConnId, Slot<T>>,
    /// Idle connections by the tick they became idle, oldest first.
    idle: BTreeSet<(u64, ConnId)>,
    /// Connections per capped address (absent: none open).
    by_address: HashMap<IpAddr, Address>,
}

#[derive(Debug)]
struct Slot<T> {
    address: Option<IpAddr>,
    /// Requests in progress; HTTP/1 has at most one, but the end of one (its response body
    /// dropped) may be seen after the start of the next, so this counts.
    requests: usize,
    /// The tick it became idle (meaningful while `requests == 0`).
    idle_since: u64,
    handle: T,
}

#[derive(Debug, Default)]
struct Address {
    open: usize,
    idle: BTreeSet<(u64, ConnId)>,
}

impl<T> Slots<T> {
    /// Empty slots with the two caps (each at least 1).
    pub fn new(max_total: usize, max_per_address: usize) -> Slots<T> {
        Slots {
            max_total: max_total.max(1),
            max_per_address: max_per_address.max(1),
            clock: 0,
            next_id: 0,
            open: HashMap::new(),
            idle: BTreeSet::new(),
            by_address: HashMap::new(),
        }
    }

    /// Connections open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Lets a new connection from `address` (`None`: not capped per address) in, idle,
    /// shedding the longest-idle connection of each cap it meets; refused with the cap when
    /// that cap has no idle connection to shed (nothing changes then).
    pub fn admit(&mut self, address: Option<IpAddr>, handle: T) -> Result<Admitted<T>, Limit> {
        let mut shed = Vec::new();
        if let Some(a) = address
            && let Some(slots) = self.by_address.get(&a)
            && slots.open >= self.max_per_address
        {
            let &(_, oldest) = slots.idle.first().ok_or(Limit::PerAddress)?;
            shed.push((self.remove(oldest), Limit::PerAddress));
        }
        if self.open.len() >= self.max_total {
            // Only reached when nothing was shed above (shedding made room under both caps).
            let &(_, oldest) = self.idle.first().ok_or(Limit::Total)?;
            shed.push((self.remove(oldest), Limit::Total));
        }
        let id = self.next_id;
        self.next_id += 1;
        let since = self.tick();
        self.open.insert(
            id,
            Slot {
                address,
                requests: 0,
                idle_since: since,
                handle,
            },
        );
        self.idle.insert((since, id));
        if let Some(a) = address {
            let slots = self.by_address.entry(a).or_default();
            slots.open += 1;
            slots.idle.insert((since, id));
        }
        Ok(Admitted { id, shed })
    }

    /// A complete request head arrived on `id`: it is not shed until the matching
    /// [`Slots::end_request`]. False when `id` is no longer open (it was shed).
    pub fn start_request(&mut self, id: ConnId) -> bool {
        let Some(slot) = self.open.get_mut(&id) else {
            return false;
        };
        slot.requests += 1;
        if slot.requests == 1 {
            let key = (slot.idle_since, id);
            self.idle.remove(&key);
            if let Some(a) = slot.address
                && let Some(slots) = self.by_address.get_mut(&a)
            {
                slots.idle.remove(&key);
            }
        }
        true
    }

    /// A request on `id` is over (its response written, or abandoned): once none is left,
    /// the connection is idle again, from now.
    pub fn end_request(&mut self, id: ConnId) {
        let tick = self.clock + 1;
        let Some(slot) = self.open.get_mut(&id) else {
            return;
        };
        slot.requests = slot.requests.saturating_sub(1);
        if slot.requests == 0 {
            self.clock = tick;
            slot.idle_since = tick;
            self.idle.insert((tick, id));
            if let Some(a) = slot.address
                && let Some(slots) = self.by_address.get_mut(&a)
            {
                slots.idle.insert((tick, id));
            }
        }
    }

    /// `id` closed (or was shed, then this does nothing): its slot is free.
    pub fn close(&mut self, id: ConnId) {
        if self.open.contains_key(&id) {
            drop(self.remove(id));
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Removes an open connection from every index; returns its handle.
    fn remove(&mut self, id: ConnId) -> T {
        let slot = self
            .open
            .remove(&id)
            .expect("only open connections are removed");
        let key = (slot.idle_since, id);
        if slot.requests == 0 {
            self.idle.remove(&key);
        }
        if let Some(a) = slot.address
            && let Some(slots) = self.by_address.get_mut(&a)
        {
            slots.open -= 1;
            slots.idle.remove(&key);
            if slots.open == 0 {
                self.by_address.remove(&a);
            }
        }
        slot.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// Admits `handle` and returns the handles shed for it.
    fn admit(s: &mut Slots<u32>, a: Option<IpAddr>, handle: u32) -> (ConnId, Vec<(u32, Limit)>) {
        let ok = s.admit(a, handle).expect("admitted");
        (ok.id, ok.shed)
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_gives_way() {
        let mut s = Slots::new(3, 100);
        let (a, _) = admit(&mut s, None, 1);
        let (b, _) = admit(&mut s, None, 2);
        let (_c, _) = admit(&mut s, None, 3);
        // `a` serves a request and is idle again: now `b` has waited longest.
        assert!(s.start_request(a));
        s.end_request(a);
        let (_d, shed) = admit(&mut s, None, 4);
        assert_eq!(shed, vec![(2, Limit::Total)]);
        assert_eq!(s.len(), 3);
        assert!(!s.start_request(b), "a shed connection is gone");
    }

    #[test]
    fn a_connection_in_a_request_is_never_shed_and_a_full_house_refuses() {
        let mut s = Slots::new(2, 100);
        let (a, _) = admit(&mut s, None, 1);
        let (b, _) = admit(&mut s, None, 2);
        assert!(s.start_request(a));
        let (c, shed) = admit(&mut s, None, 3);
        assert_eq!(
            shed,
            vec![(2, Limit::Total)],
            "the idle one, not the busy one"
        );
        assert!(!s.start_request(b));
        assert!(s.start_request(c));
        assert_eq!(s.admit(None, 4).unwrap_err(), Limit::Total);
        assert_eq!(s.len(), 2);
        // A request ends: its connection may give way again.
        s.end_request(a);
        let (_, shed) = admit(&mut s, None, 5);
        assert_eq!(shed, vec![(1, Limit::Total)]);
    }

    #[test]
    fn overlapping_requests_keep_a_connection_busy_until_the_last_ends() {
        let mut s = Slots::new(1, 100);
        let (a, _) = admit(&mut s, None, 1);
        assert!(s.start_request(a));
        assert!(s.start_request(a));
        s.end_request(a);
        assert_eq!(s.admit(None, 2).unwrap_err(), Limit::Total);
        s.end_request(a);
        let (_, shed) = admit(&mut s, None, 3);
        assert_eq!(shed, vec![(1, Limit::Total)]);
    }

    #[test]
    fn one_address_at_its_cap_sheds_only_its_own_connections() {
        let mut s = Slots::new(10, 2);
        let (_other, _) = admit(&mut s, addr("192.0.2.9"), 9);
        let (_, _) = admit(&mut s, addr("192.0.2.1"), 1);
        let (_, _) = admit(&mut s, addr("192.0.2.1"), 2);
        let (_, shed) = admit(&mut s, addr("192.0.2.1"), 3);
        assert_eq!(shed, vec![(1, Limit::PerAddress)], "its own oldest, not 9");
        let (_, shed) = admit(&mut s, addr("192.0.2.1"), 4);
        assert_eq!(shed, vec![(2, Limit::PerAddress)]);
        assert_eq!(s.len(), 3);
        // Uncapped (loopback) connections never meet the per-address cap.
        for h in 10..17 {
            assert!(admit(&mut s, None, h).1.is_empty());
        }
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn an_address_whose_connections_are_all_in_requests_is_refused_alone() {
        let mut s = Slots::new(10, 2);
        let (a, _) = admit(&mut s, addr("192.0.2.1"), 1);
        let (b, _) = admit(&mut s, addr("192.0.2.1"), 2);
        assert!(s.start_request(a) && s.start_request(b));
        assert_eq!(
            s.admit(addr("192.0.2.1"), 3).unwrap_err(),
            Limit::PerAddress
        );
        assert!(admit(&mut s, addr("192.0.2.2"), 4).1.is_empty());
        // One closes: the address may connect again.
        s.close(a);
        assert!(admit(&mut s, addr("192.0.2.1"), 5).1.is_empty());
    }

    #[test]
    fn closing_frees_every_index() {
        let mut s = Slots::new(2, 1);
        let (a, _) = admit(&mut s, addr("192.0.2.1"), 1);
        let (b, _) = admit(&mut s, None, 2);
        s.close(a);
        s.close(b);
        s.close(b);
        assert!(s.is_empty());
        assert!(s.idle.is_empty() && s.by_address.is_empty());
        assert!(admit(&mut s, addr("192.0.2.1"), 3).1.is_empty());
    }

    #[test]
    fn a_flood_of_idle_connections_never_displaces_a_connection_in_a_request() {
        // The e2e scenario in miniature: one request in progress among a thousand idlers.
        let mut s = Slots::new(16, 16);
        let (real, _) = admit(&mut s, None, 0);
        assert!(s.start_request(real));
        for h in 1..1000 {
            for (shed, limit) in admit(&mut s, None, h).1 {
                assert_ne!(shed, 0);
                assert_eq!(limit, Limit::Total);
            }
        }
        assert_eq!(s.len(), 16);
        assert!(s.start_request(real), "still open");
    }
}
