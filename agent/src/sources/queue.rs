//! The bounded queue between the sources and the batcher, with the overflow policy of
//! `ingest.overflow`: `block` makes a full queue wait (backpressure), `drop_oldest` discards
//! the oldest queued reading and counts it. One `VecDeque` behind a mutex serves both
//! policies, so their behaviour differs only where the queue is full.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kdelta_sensors::Reading;
use tokio::sync::Notify;

use super::config::Overflow;

/// A reading and the source that produced it (for per-source metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// Source instance name.
    pub source: Arc<str>,
    /// The reading.
    pub reading: Reading,
}

/// The queue has been closed: the agent is shutting down and takes no more readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ingest queue is closed (shutting down)")]
pub struct Closed;

/// Bounded multi-producer, single-consumer queue of readings.
#[derive(Debug)]
pub struct IngestQueue {
    state: Mutex<State>,
    capacity: usize,
    overflow: Overflow,
    /// Wakes the consumer when readings arrive or the queue closes.
    readable: Notify,
    /// Wakes blocked producers when the consumer made room or the queue closed.
    writable: Notify,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Queued>,
    closed: bool,
}

impl IngestQueue {
    /// A queue holding at most `capacity` readings (at least 1).
    pub fn new(capacity: usize, overflow: Overflow) -> IngestQueue {
        IngestQueue {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            overflow,
            readable: Notify::new(),
            writable: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The critical sections cannot panic half-way; a poisoned lock holds a consistent deque.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds readings. With `block`, waits while the queue is full; with `drop_oldest`, never
    /// waits and returns the readings it discarded (the oldest ones, possibly of other
    /// sources) so the caller can count them.
    pub async fn push(&self, items: Vec<Queued>) -> Result<Vec<Queued>, Closed> {
        let mut dropped = Vec::new();
        let mut pending: VecDeque<Queued> = items.into();
        while !pending.is_empty() {
            // Register for a wake-up before looking, so a `notify_waiters` between the check
            // and the await is not lost.
            let writable = self.writable.notified();
            tokio::pin!(writable);
            writable.as_mut().enable();
            {
                let mut state = self.lock();
                if state.closed {
                    return Err(Closed);
                }
                while let Some(item) = pending.pop_front() {
                    if state.items.len() >= self.capacity {
                        if self.overflow == Overflow::Block {
                            pending.push_front(item);
                            break;
                        }
                        dropped.extend(state.items.pop_front());
                    }
                    state.items.push_back(item);
                }
            }
            self.readable.notify_one();
            if !pending.is_empty() {
                writable.await;
            }
        }
        Ok(dropped)
    }

    /// Moves up to `max` readings into `out`, waiting until at least one is queued. Returns
    /// the number moved; 0 means the queue is closed and empty.
    pub async fn pop_into(&self, out: &mut Vec<Queued>, max: usize) -> usize {
        loop {
            let readable = self.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            {
                let mut state = self.lock();
                if !state.items.is_empty() {
                    let n = max.min(state.items.len());
                    out.extend(state.items.drain(..n));
                    drop(state);
                    self.writable.notify_waiters();
                    return n;
                }
                if state.closed {
                    return 0;
                }
            }
            readable.await;
        }
    }

    /// Refuses further pushes (blocked producers get [`Closed`]); what is queued can still be
    /// popped.
    pub fn close(&self) {
        self.lock().closed = true;
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    /// Readings currently queued.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn items(source: &str, range: std::ops::Range<i64>) -> Vec<Queued> {
        let source: Arc<str> = source.into();
        range
            .map(|ts| Queued {
                source: source.clone(),
                reading: Reading::new("s", ts, ts as f64, None),
            })
            .collect()
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_newest_and_reports_the_dropped() {
        let q = IngestQueue::new(3, Overflow::DropOldest);
        assert!(q.push(items("a", 0..2)).await.unwrap().is_empty());
        let dropped = q.push(items("b", 2..5)).await.unwrap();
        assert_eq!(
            dropped.iter().map(|d| d.reading.ts_ms).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(dropped.iter().all(|d| &*d.source == "a"));
        let mut out = Vec::new();
        assert_eq!(q.pop_into(&mut out, 10).await, 3);
        assert_eq!(
            out.iter().map(|d| d.reading.ts_ms).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn block_waits_for_room_and_loses_nothing() {
        let q = Arc::new(IngestQueue::new(2, Overflow::Block));
        let producer = {
            let q = q.clone();
            tokio::spawn(async move { q.push(items("a", 0..5)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(q.len(), 2, "producer fills the queue, then waits");
        assert!(!producer.is_finished());
        let mut out = Vec::new();
        while out.len() < 5 {
            q.pop_into(&mut out, 1).await;
        }
        assert!(producer.await.unwrap().unwrap().is_empty());
        assert_eq!(
            out.iter().map(|d| d.reading.ts_ms).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn close_wakes_everyone_and_drains() {
        let q = Arc::new(IngestQueue::new(1, Overflow::Block));
        q.push(items("a", 0..1)).await.unwrap();
        let blocked = {
            let q = q.clone();
            tokio::spawn(async move { q.push(items("a", 1..2)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        q.close();
        assert_eq!(blocked.await.unwrap(), Err(Closed));
        let mut out = Vec::new();
        assert_eq!(q.pop_into(&mut out, 10).await, 1);
        assert_eq!(q.pop_into(&mut out, 10).await, 0);
    }
}
