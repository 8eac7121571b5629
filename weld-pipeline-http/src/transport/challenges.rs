//! The hellos waiting for their answer: a bounded set of places, the oldest pushed out to make
//! room, as the TCP transport's handshake places.
//!
//! A place is taken by any hello that decodes, before anything is proven, so an unauthenticated
//! client can take them as fast as it can post (an attack run did ~11k/s over two
//! connections). Refusing the newest hello once all are taken, as a plain cap does, let such a
//! flood keep every worker out for as long as it lasted. So places are shared out by client
//! (its address, an IPv6 one by its /64): a client holds at most [`MAX_PER_CLIENT`], its new
//! hello pushing out its own oldest, so one flooding address cycles through its own few places
//! and never touches a worker's, however long the worker's round trip. When every place is
//! taken (a flood from many addresses), the client holding the most gives up its oldest. A
//! worker whose challenge was pushed out anyway has its answer refused as transient (401), and
//! says hello again at once.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use weld_pipeline::Hello;

/// Hellos waiting for their answer at once: as many as the TCP transport's handshakes. A round
/// trip apart, 128 is plenty for workers reconnecting together; each holds at most a 4 KiB
/// hello, so the flood's hellos cost at most 512 KiB.
pub(super) const MAX_CHALLENGES: usize = 128;

/// The most places one client holds: a few workers reconnecting together from one host.
pub(super) const MAX_PER_CLIENT: usize = 8;

/// A hello waiting for its answer.
#[derive(Debug)]
struct Waiting {
    /// The client that said it.
    client: IpAddr,
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
    /// Remembers a hello of `client` and its challenge under `pending`: when the client holds
    /// its share, its own oldest is forgotten to make room; when all places are taken, the
    /// oldest of the client holding the most. `true` when one was.
    pub(super) fn insert(
        &mut self,
        pending: String,
        client: IpAddr,
        hello: Hello,
        challenge: [u8; 32],
    ) -> bool {
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for waiting in self.by_pending.values() {
            *held.entry(waiting.client).or_default() += 1;
        }
        let evicted = if held.get(&client).copied().unwrap_or(0) >= MAX_PER_CLIENT {
            self.forget_oldest_of(|from| from == client)
        } else if self.by_pending.len() >= MAX_CHALLENGES {
            // Of the clients holding most, the one with the oldest challenge gives it up.
            let most = held.values().copied().max().unwrap_or(0);
            self.forget_oldest_of(|from| held.get(&from) == Some(&most))
        } else {
            false
        };
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, pending.clone());
        self.by_pending.insert(
            pending,
            Waiting {
                client,
                hello,
                challenge,
                at: Instant::now(),
                seq,
            },
        );
        evicted
    }

    /// Forgets the oldest challenge of a client `chosen`; whether there was one.
    fn forget_oldest_of(&mut self, chosen: impl Fn(IpAddr) -> bool) -> bool {
        let oldest = self
            .order
            .iter()
            .find(|(_, pending)| {
                self.by_pending
                    .get(*pending)
                    .is_some_and(|w| chosen(w.client))
            })
            .map(|(&seq, pending)| (seq, pending.clone()));
        let Some((seq, pending)) = oldest else {
            return false;
        };
        self.order.remove(&seq);
        self.by_pending.remove(&pending);
        true
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

    fn client(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_full_set_forgets_the_oldest_of_the_client_holding_most_and_keeps_the_newest() {
        let mut challenges = Challenges::default();
        for i in 0..MAX_CHALLENGES {
            let from = client(u32::try_from(i / MAX_PER_CLIENT).unwrap());
            assert!(!challenges.insert(format!("p{i}"), from, Hello::new("w", vec![]), [0; 32]));
        }
        let newcomer = client(1_000);
        assert!(challenges.insert("newest".into(), newcomer, Hello::new("w", vec![]), [1; 32]));
        assert_eq!(challenges.len(), MAX_CHALLENGES);
        assert!(challenges.take("p0").is_none(), "the oldest made room");
        assert!(challenges.take("p1").is_some());
        assert_eq!(challenges.take("newest").unwrap().1, [1; 32]);
        assert!(challenges.take("newest").is_none(), "answered once");
    }

    #[test]
    fn a_flooding_client_cycles_through_its_own_share_and_never_pushes_out_a_worker() {
        let mut challenges = Challenges::default();
        let (flood, worker) = (client(1), client(2));
        challenges.insert("worker".into(), worker, Hello::new("w", vec![]), [7; 32]);
        for i in 0..100_000 {
            challenges.insert(format!("f{i}"), flood, Hello::new("x", vec![]), [0; 32]);
        }
        assert_eq!(challenges.len(), MAX_PER_CLIENT + 1);
        assert_eq!(challenges.take("worker").unwrap().1, [7; 32]);
        assert!(
            challenges.take("f99999").is_some(),
            "the flood's newest is kept"
        );
    }

    #[test]
    fn expired_challenges_are_forgotten() {
        let mut challenges = Challenges::default();
        challenges.insert("old".into(), client(1), Hello::new("w", vec![]), [0; 32]);
        challenges.expire(Duration::ZERO);
        assert!(challenges.take("old").is_none());
        assert_eq!(challenges.len(), 0);
    }
}
