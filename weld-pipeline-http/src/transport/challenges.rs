//! The hellos waiting for their answer: a bounded set of places, the oldest pushed out to make
//! room, as the TCP transport's handshake places.
//!
//! A place is taken by any hello that decodes, before anything is proven, so an unauthenticated
//! client can take them as fast as it can post (an attack run did ~11k/s over two
//! connections). Refusing the newest hello once all are taken, as a plain cap does, let such a
//! flood keep every worker out for as long as it lasted. Pushing out the oldest instead makes
//! the flood cycle through the places, while a real worker, which answers within a round trip,
//! answers long before [`MAX_CHALLENGES`] newer hellos push it out; and if one ever is pushed
//! out, its answer is refused as transient (401), and the worker says hello again at once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use weld_pipeline::Hello;

/// Hellos waiting for their answer at once: as many as the TCP transport's handshakes. A round
/// trip apart, 128 is plenty for workers reconnecting together; each holds at most a 4 KiB
/// hello, so the flood's hellos cost at most 512 KiB.
pub(super) const MAX_CHALLENGES: usize = 128;

/// A hello waiting for its answer.
#[derive(Debug)]
struct Waiting {
    hello: Hello,
    challenge: [u8; 32],
    at: Instant,
    /// Its place in the arrival order.
    seq: u64,
}

/// The hellos waiting for their answer, by pending id, oldest first.
#[derive(Debug, Default)]
pub(super) struct Challenges {
    by_pending: HashMap<String, Waiting>,
    /// Arrival order: sequence number to pending id.
    order: BTreeMap<u64, String>,
    next: u64,
}

impl Challenges {
    /// Remembers a hello and its challenge under `pending`; when all places are taken, the
    /// oldest is forgotten to make room. `true` when one was.
    pub(super) fn insert(&mut self, pending: String, hello: Hello, challenge: [u8; 32]) -> bool {
        let mut evicted = false;
        while self.by_pending.len() >= MAX_CHALLENGES {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_pending.remove(&oldest);
            evicted = true;
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, pending.clone());
        self.by_pending.insert(
            pending,
            Waiting {
                hello,
                challenge,
                at: Instant::now(),
                seq,
            },
        );
        evicted
    }

    /// The hello and challenge waiting under `pending`, taken out: a challenge is answered once.
    pub(super) fn take(&mut self, pending: &str) -> Option<(Hello, [u8; 32])> {
        let waiting = self.by_pending.remove(pending)?;
        self.order.remove(&waiting.seq);
        Some((waiting.hello, waiting.challenge))
    }

    /// Forgets the challenges older than `timeout`.
    pub(super) fn expire(&mut self, timeout: Duration) {
        while let Some((&seq, pending)) = self.order.first_key_value() {
            let stale = self
                .by_pending
                .get(pending)
                .is_none_or(|w| w.at.elapsed() >= timeout);
            if !stale {
                break;
            }
            let pending = pending.clone();
            self.order.remove(&seq);
            self.by_pending.remove(&pending);
        }
    }

    /// How many are waiting.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_set_forgets_its_oldest_and_keeps_the_newest() {
        let mut challenges = Challenges::default();
        for i in 0..MAX_CHALLENGES {
            assert!(!challenges.insert(format!("p{i}"), Hello::new("w", vec![]), [0; 32]));
        }
        assert!(challenges.insert("newest".into(), Hello::new("w", vec![]), [1; 32]));
        assert_eq!(challenges.len(), MAX_CHALLENGES);
        assert!(challenges.take("p0").is_none(), "the oldest made room");
        assert!(challenges.take("p1").is_some());
        assert_eq!(challenges.take("newest").unwrap().1, [1; 32]);
        assert!(challenges.take("newest").is_none(), "answered once");
    }

    #[test]
    fn expired_challenges_are_forgotten() {
        let mut challenges = Challenges::default();
        challenges.insert("old".into(), Hello::new("w", vec![]), [0; 32]);
        challenges.expire(Duration::ZERO);
        assert!(challenges.take("old").is_none());
        assert_eq!(challenges.len(), 0);
    }
}
