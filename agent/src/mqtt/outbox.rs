//! The durable outbox: which changes of the store's log have been published and confirmed.
//!
//! Readings are never copied: the outbox is a cursor over [`Store::log_after`] positions
//! (local change-log ids), persisted in `<data_dir>/mqtt-outbox.cursor` (write temp file,
//! fsync, rename, fsync the directory). The cursor (`acked`) moves past a change only when
//! every message of that change and of every earlier change got its PUBACK, so a crash or a
//! broker outage of any length resumes in order from it. The file also keeps `sent`, the
//! highest position whose messages may have been sent: after a crash, messages of changes in
//! `(acked, sent]` are republished and counted as possible duplicates.
//!
//! In-flight accounting follows rumqttc: every accepted publish request produces one
//! `Outgoing::Publish(pkid)` event, in request order, and rumqttc never has two unacknowledged
//! publishes with one packet id (it reuses ids only after their PUBACK). So a FIFO of
//! submissions maps events to packet ids, and a PUBACK's id names exactly one in-flight
//! message.
//!
//! [`Store::log_after`]: kdelta_sync::Store::log_after

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MqttError;

/// File name of the cursor inside the data directory.
pub const CURSOR_FILE: &str = "mqtt-outbox.cursor";

/// What the cursor file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CursorState {
    /// Every change up to this log position is published and confirmed.
    pub acked: i64,
    /// Messages of changes up to this position may have been sent.
    pub sent: i64,
}

/// The cursor file.
#[derive(Debug, Clone)]
pub struct CursorFile {
    path: PathBuf,
}

impl CursorFile {
    /// The cursor file of a data directory.
    pub fn in_dir(data_dir: &Path) -> CursorFile {
        CursorFile {
            path: data_dir.join(CURSOR_FILE),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the cursor; `None` when there is no file yet.
    pub fn load(&self) -> Result<Option<CursorState>, MqttError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(MqttError::Cursor {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let state: CursorState =
            serde_json::from_slice(&bytes).map_err(|e| MqttError::CursorCorrupt {
                path: self.path.clone(),
                detail: e.to_string(),
            })?;
        if state.acked < 0 || state.sent < state.acked {
            return Err(MqttError::CursorCorrupt {
                path: self.path.clone(),
                detail: format!(
                    "acked {} and sent {} are inconsistent",
                    state.acked, state.sent
                ),
            });
        }
        Ok(Some(state))
    }

    /// Writes the cursor atomically and durably (temp file, fsync, rename, fsync directory).
    pub fn store(&self, state: CursorState) -> Result<(), MqttError> {
        let io = |source| MqttError::Cursor {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("cursor.tmp");
        let body = serde_json::to_vec(&state).unwrap_or_default();
        {
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&body).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl CursorState {
    /// This cursor checked against a log that ends at `log_end`: a cursor beyond the end
    /// (the store was restored from a backup, or replaced) would silently skip the next
    /// changes, so it is reset to the end. `None` when it is within the log.
    pub fn beyond(self, log_end: i64) -> Option<CursorState> {
        (self.acked > log_end || self.sent > log_end).then_some(CursorState {
            acked: self.acked.min(log_end),
            sent: self.sent.min(log_end),
        })
    }
}

/// One submitted message (or a change without messages) in log order.
#[derive(Debug)]
struct Slot {
    log_id: i64,
    /// The last slot of its change: confirming it moves the cursor to `log_id`.
    last_of_change: bool,
    done: bool,
    readings: u32,
}

/// In-flight accounting of the current connection.
#[derive(Debug, Default)]
pub struct Outbox {
    acked: i64,
    queue: VecDeque<Slot>,
    /// Id of `queue[0]`; slot ids grow by one per slot.
    base: u64,
    by_pkid: HashMap<u16, u64>,
    /// Submissions waiting for their `Outgoing::Publish` event: `Some(slot)` for outbox
    /// messages, `None` for other publishes (status, discovery, command results).
    awaiting_pkid: VecDeque<Option<u64>>,
    in_flight: usize,
}

/// What a PUBACK confirmed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Acked {
    /// Outbox messages confirmed (0 for other publishes).
    pub messages: u64,
    /// Readings in them.
    pub readings: u64,
    /// The cursor moved.
    pub advanced: bool,
}

impl Outbox {
    /// An outbox whose cursor is `acked`.
    pub fn new(acked: i64) -> Outbox {
        Outbox {
            acked,
            ..Outbox::default()
        }
    }

    /// Every change up to here is confirmed.
    pub fn acked(&self) -> i64 {
        self.acked
    }

    /// Outbox messages submitted and not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records a submitted outbox message of change `log_id`.
    pub fn submit(&mut self, log_id: i64, last_of_change: bool, readings: u32) {
        let id = self.base + self.queue.len() as u64;
        self.queue.push_back(Slot {
            log_id,
            last_of_change,
            done: false,
            readings,
        });
        self.awaiting_pkid.push_back(Some(id));
        self.in_flight += 1;
    }

    /// Records a change that has nothing to publish (documents, other actors' readings): it
    /// is passed once everything before it is confirmed.
    pub fn skip(&mut self, log_id: i64) -> bool {
        self.queue.push_back(Slot {
            log_id,
            last_of_change: true,
            done: true,
            readings: 0,
        });
        self.advance()
    }

    /// Records a submitted publish that is not part of the outbox.
    pub fn submit_other(&mut self) {
        self.awaiting_pkid.push_back(None);
    }

    /// rumqttc wrote the next submitted publish with packet id `pkid` (0 for QoS 0, which
    /// counts as confirmed once written).
    pub fn on_outgoing(&mut self, pkid: u16) -> Acked {
        match self.awaiting_pkid.pop_front() {
            Some(Some(id)) if pkid == 0 => self.confirm(id),
            Some(Some(id)) => {
                self.by_pkid.insert(pkid, id);
                Acked::default()
            }
            _ => Acked::default(),
        }
    }

    /// A PUBACK for `pkid` arrived.
    pub fn on_puback(&mut self, pkid: u16) -> Acked {
        match self.by_pkid.remove(&pkid) {
            Some(id) => self.confirm(id),
            None => Acked::default(),
        }
    }

    fn confirm(&mut self, id: u64) -> Acked {
        let Some(slot) = id
            .checked_sub(self.base)
            .and_then(|i| self.queue.get_mut(i as usize))
        else {
            return Acked::default();
        };
        if slot.done {
            return Acked::default();
        }
        slot.done = true;
        self.in_flight -= 1;
        let readings = u64::from(slot.readings);
        Acked {
            messages: 1,
            readings,
            advanced: self.advance(),
        }
    }

    /// Drops the confirmed prefix; true when the cursor moved.
    fn advance(&mut self) -> bool {
        let mut moved = false;
        while self.queue.front().is_some_and(|s| s.done) {
            if let Some(slot) = self.queue.pop_front() {
                self.base += 1;
                if slot.last_of_change && slot.log_id > self.acked {
                    self.acked = slot.log_id;
                    moved = true;
                }
            }
        }
        moved
    }

    /// The connection is gone: forgets everything in flight (it will be republished from the
    /// cursor). Returns how many messages had been submitted past the cursor (possible
    /// duplicates when republished).
    pub fn reset(&mut self) -> u64 {
        let submitted = self
            .queue
            .iter()
            .filter(|s| s.readings > 0 || !s.done)
            .count() as u64;
        self.base += self.queue.len() as u64;
        self.queue.clear();
        self.by_pkid.clear();
        self.awaiting_pkid.clear();
        self.in_flight = 0;
        submitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_moves_only_past_fully_acked_prefix() {
        let mut o = Outbox::new(0);
        o.submit(1, false, 1);
        o.submit(1, true, 1);
        o.submit(2, true, 1);
        assert_eq!(o.on_outgoing(1), Acked::default());
        o.on_outgoing(2);
        o.on_outgoing(3);
        // Out of order: change 2 first, then the second half of change 1.
        assert_eq!(
            o.on_puback(3),
            Acked {
                messages: 1,
                readings: 1,
                advanced: false
            }
        );
        assert!(!o.on_puback(2).advanced);
        assert_eq!(o.acked(), 0);
        assert!(o.on_puback(1).advanced);
        assert_eq!(o.acked(), 2);
        assert_eq!(o.in_flight(), 0);
        // Unknown or repeated acks change nothing.
        assert_eq!(o.on_puback(1), Acked::default());
    }

    #[test]
    fn pkids_reused_and_other_publishes_interleaved() {
        let mut o = Outbox::new(10);
        o.submit_other();
        o.submit(11, true, 5);
        o.on_outgoing(1); // the status message
        o.on_outgoing(2);
        assert_eq!(o.on_puback(1), Acked::default());
        assert!(o.on_puback(2).advanced);
        o.submit(12, true, 1);
        o.on_outgoing(1); // id 1 again, now for the outbox
        assert!(o.on_puback(1).advanced);
        assert_eq!(o.acked(), 12);
        assert!(o.skip(13));
        assert_eq!(o.acked(), 13);
    }

    #[test]
    fn qos0_counts_on_write_and_reset_counts_resends() {
        let mut o = Outbox::new(0);
        o.submit(1, true, 1);
        assert!(o.on_outgoing(0).advanced);
        o.submit(2, true, 1);
        o.submit(3, true, 1);
        o.on_outgoing(7);
        assert_eq!(o.reset(), 2);
        assert_eq!(o.acked(), 1);
        assert_eq!(o.on_puback(7), Acked::default());
        assert!(!o.skip(4) || o.acked() == 4);
    }

    #[test]
    fn cursor_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = CursorFile::in_dir(dir.path());
        assert_eq!(f.load().unwrap(), None);
        f.store(CursorState { acked: 5, sent: 9 }).unwrap();
        assert_eq!(f.load().unwrap(), Some(CursorState { acked: 5, sent: 9 }));
        std::fs::write(f.path(), b"garbage").unwrap();
        assert!(matches!(f.load(), Err(MqttError::CursorCorrupt { .. })));
    }
}
