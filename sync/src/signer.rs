//! Signing local changes beside the writer: Ed25519 signing (~25 µs a change here) was a
//! third of the writer thread's time under many concurrent puts, and the writer is the one
//! thread every write waits for. The chain hashes are cheap and sequential, so the writer
//! computes them in place (`chain.rs`); the signatures of a write group's changes are made on
//! this thread while the writer runs the rest of the group, and stored before its COMMIT
//! ([`Writer::store_signatures`](crate::writer::Writer)). Nothing outside the open
//! transaction ever sees a change without its signature.
//!
//! Requests and results travel in ticket order over two channels. At most one write group's
//! changes are outstanding: the writer waits for every signature it asked for before the
//! group ends, committed or not, so neither channel holds more than one group's changes.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::seal::{Hash, SigningKey};
use crate::{Result, StoreError};

/// The signing thread of one store's writer.
pub(crate) struct Signer {
    requests: Option<mpsc::Sender<(u64, Hash)>>,
    results: mpsc::Receiver<(u64, [u8; 64])>,
    /// The next ticket to hand out.
    next: u64,
    /// Tickets handed out whose result has not been taken.
    outstanding: u64,
    thread: Option<JoinHandle<()>>,
}

impl Signer {
    /// Starts a thread signing with (a copy of) `key`.
    pub(crate) fn start(key: &SigningKey) -> Result<Signer> {
        let key = SigningKey::from_pkcs8(key.pkcs8())?;
        let (requests, work) = mpsc::channel::<(u64, Hash)>();
        let (done, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kdelta-signer".into())
            .spawn(move || {
                for (ticket, hash) in work {
                    if done.send((ticket, key.sign(&hash))).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| StoreError::Io {
                path: "kdelta-signer thread".into(),
                source: e,
            })?;
        Ok(Signer {
            requests: Some(requests),
            results,
            next: 0,
            outstanding: 0,
            thread: Some(thread),
        })
    }

    /// Asks for the signature of `hash`; the returned ticket redeems it.
    pub(crate) fn request(&mut self, hash: Hash) -> Result<u64> {
        let ticket = self.next;
        self.requests
            .as_ref()
            .and_then(|r| r.send((ticket, hash)).ok())
            .ok_or_else(signer_gone)?;
        self.next += 1;
        self.outstanding += 1;
        Ok(ticket)
    }

    /// How many signatures this thread was asked for since it started.
    #[cfg(test)]
    pub(crate) fn requested(&self) -> u64 {
        self.next
    }

    /// The signatures of `tickets` (ascending), in that order, waiting for them; results of
    /// tickets not asked for (those of a rolled-back job) are dropped. Afterwards nothing is
    /// outstanding.
    pub(crate) fn collect(&mut self, tickets: &[u64]) -> Result<Vec<[u8; 64]>> {
        let mut out = Vec::with_capacity(tickets.len());
        let mut wanted = tickets.iter().peekable();
        while self.outstanding > 0 {
            let (ticket, sig) = self.results.recv().map_err(|_| signer_gone())?;
            self.outstanding -= 1;
            if wanted.peek() == Some(&&ticket) {
                wanted.next();
                out.push(sig);
            }
        }
        match wanted.next() {
            None => Ok(out),
            Some(t) => Err(StoreError::Decode {
                what: "change signature",
                detail: format!("no signature for ticket {t}"),
            }),
        }
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn signer_gone() -> StoreError {
    StoreError::Decode {
        what: "change signature",
        detail: "the signing thread has stopped".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_come_back_for_the_tickets_asked_and_nothing_stays_outstanding() {
        let key = SigningKey::generate().unwrap();
        let mut s = Signer::start(&key).unwrap();
        let hashes: Vec<Hash> = (0..5u8).map(|i| [i; 32]).collect();
        let tickets: Vec<u64> = hashes.iter().map(|h| s.request(*h).unwrap()).collect();
        // A rolled-back job's tickets (1 and 3) are not redeemed.
        let sigs = s.collect(&[tickets[0], tickets[2], tickets[4]]).unwrap();
        for (sig, h) in sigs.iter().zip([hashes[0], hashes[2], hashes[4]]) {
            assert!(crate::seal::verify(&key.public(), &h, sig));
        }
        assert_eq!(s.outstanding, 0);
        // The next group starts clean.
        let t = s.request([9; 32]).unwrap();
        let sig = s.collect(&[t]).unwrap();
        assert!(crate::seal::verify(&key.public(), &[9; 32], &sig[0]));
        assert!(s.collect(&[]).unwrap().is_empty());
        assert!(s.collect(&[77]).is_err(), "a ticket never handed out");
    }
}
