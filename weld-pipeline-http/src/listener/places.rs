//! The listener's connection places: a cap, a share of it per client address, and idle
//! connections closed first when room is needed.
//!
//! A plain cap (a semaphore) let one client that re-dials idle sockets hold every place: an
//! attack run did it at ~390 connections/s, and `/health` failed 100 of 100 for everyone else.
//! So places are handed out with these rules, in order:
//!
//! 1. a client (an IP address) holding its share ([`Limits::max_per_client`]) gets a place
//!    only by giving up its own oldest idle connection; with none idle, the new one is closed;
//! 2. when every place is taken, the client holding the most gives up its oldest idle
//!    connection; with none idle anywhere, the new one is closed;
//! 3. while more than half the places are taken, an idle connection is closed sooner than
//!    [`Limits::header_timeout`]: the fuller, the sooner, down to [`PRESSURE_IDLE_FLOOR`] at
//!    the cap ([`Places::idle_limit`]).
//!
//! A connection closed to make room keeps its descriptor until its task has let its socket go,
//! which a flood of accepts can outrun: so until it is gone it still counts, and while closing
//! ones and open ones together reach the cap and an eighth ([`Places::slack`]), a new
//! connection is closed as soon as it is accepted. The descriptors a listener holds stay under
//! that sum, whatever the flood.
//!
//! Idle means no request in progress: a connection just accepted that has sent nothing yet,
//! or a keep-alive connection between requests. A request in progress (a held poll, a stop
//! waiting for a page boundary) is never cut to make room. Closing an idle HTTP/1.1
//! connection loses nothing: a client dials again.
//!
//! [`Limits::max_per_client`]: super::Limits::max_per_client
//! [`Limits::header_timeout`]: super::Limits::header_timeout

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weld_pipeline::sync::Locked;

use tokio_util::sync::CancellationToken;

/// The shortest an idle connection is kept, at the cap. Long enough for a client to send the
/// request it dialed for on a loaded machine; short enough that a flood of idle sockets, cut
/// this often, leaves room.
pub(super) const PRESSURE_IDLE_FLOOR: Duration = Duration::from_secs(1);

/// Why a connection got no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoPlace {
    /// Its client holds its share, every one of them busy.
    ClientShare,
    /// Every place is taken by a connection with a request in progress.
    Full,
    /// Connections closed to make room have not let their sockets go yet, and with them the
    /// listener holds the cap and its slack.
    Closing,
}

#[derive(Debug)]
struct Place {
    client: IpAddr,
    /// Requests in progress on it.
    busy: usize,
    /// Since when it has had none (its accept, or its last answer).
    idle_since: Instant,
    close: CancellationToken,
}

#[derive(Debug, Default)]
struct Taken {
    places: HashMap<u64, Place>,
    /// Connections closed (to make room, or idle too long) whose tickets are not dropped yet:
    /// each still holds its socket.
    closing: HashSet<u64>,
    next: u64,
}

/// The places of one listener (see the module docs).
#[derive(Debug)]
pub(super) struct Places {
    taken: Mutex<Taken>,
    max: usize,
    per_client: usize,
    header_timeout: Duration,
}

impl Places {
    pub(super) fn new(max: usize, per_client: usize, header_timeout: Duration) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Places {
            taken: Mutex::default(),
            max,
            per_client: per_client.clamp(1, max),
            header_timeout,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Taken> {
        self.taken.locked()
    }

    /// A place for a new connection from `client`, closing an idle one to make room if need be
    /// (then `true` comes with it).
    /// A `shared` client (a trusted proxy, on behalf of many) is held to no share of its own.
    pub(super) fn enter(
        self: &Arc<Self>,
        client: IpAddr,
        shared: bool,
    ) -> Result<(Ticket, bool), NoPlace> {
        let mut taken = self.lock();
        if taken.places.len() + taken.closing.len() >= self.max + self.slack() {
            return Err(NoPlace::Closing);
        }
        let of_client = taken.places.values().filter(|p| p.client == client).count();
        let mut made_room = false;
        if of_client >= self.per_client && !shared {
            let oldest =
                oldest_idle(&taken.places, |p| p.client == client).ok_or(NoPlace::ClientShare)?;
            close(&mut taken, oldest);
            made_room = true;
        } else if taken.places.len() >= self.max {
            let mut held: HashMap<IpAddr, usize> = HashMap::new();
            for place in taken.places.values() {
                *held.entry(place.client).or_default() += 1;
            }
            // The biggest holder that has an idle connection gives one up.
            let mut holders: Vec<(IpAddr, usize)> = held.into_iter().collect();
            holders.sort_by_key(|(_, held)| std::cmp::Reverse(*held));
            let oldest = holders
                .iter()
                .find_map(|(holder, _)| oldest_idle(&taken.places, |p| p.client == *holder))
                .ok_or(NoPlace::Full)?;
            close(&mut taken, oldest);
            made_room = true;
        }
        let id = taken.next;
        taken.next += 1;
        let close = CancellationToken::new();
        taken.places.insert(
            id,
            Place {
                client,
                busy: 0,
                idle_since: Instant::now(),
                close: close.clone(),
            },
        );
        let ticket = Ticket {
            places: self.clone(),
            id,
            close,
            in_progress: AtomicUsize::new(0),
        };
        Ok((ticket, made_room))
    }

    /// How long an idle connection may stay with `taken` of the places taken: the header
    /// timeout up to half the places, then shorter as they fill, linearly, down to
    /// [`PRESSURE_IDLE_FLOOR`] at the cap.
    pub(super) fn idle_limit(&self, taken: usize) -> Duration {
        if taken * 2 <= self.max {
            return self.header_timeout;
        }
        // Twice the share of places still free: 1 at half full, 0 at the cap.
        let free = self.max.saturating_sub(taken);
        let scale = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.header_timeout
            .checked_mul(scale(2 * free))
            .map_or(self.header_timeout, |d| d / scale(self.max))
            .max(PRESSURE_IDLE_FLOOR)
            .min(self.header_timeout)
    }

    /// Closes the connections idle for longer than the present pressure allows (rule 3); how
    /// many.
    pub(super) fn sweep(&self) -> usize {
        let mut taken = self.lock();
        let limit = self.idle_limit(taken.places.len());
        if limit >= self.header_timeout {
            // hyper's own header timeout closes them.
            return 0;
        }
        let stale: Vec<u64> = taken
            .places
            .iter()
            .filter(|(_, p)| p.busy == 0 && p.idle_since.elapsed() >= limit)
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            close(&mut taken, *id);
        }
        stale.len()
    }

    /// Places taken now.
    pub(super) fn taken(&self) -> usize {
        self.lock().places.len()
    }

    /// How many connections closed and not gone yet may stand beyond the cap: an eighth of it,
    /// at least one.
    pub(super) fn slack(&self) -> usize {
        self.max.div_ceil(8)
    }
}

/// The oldest idle place among those `matching`.
fn oldest_idle(places: &HashMap<u64, Place>, matching: impl Fn(&Place) -> bool) -> Option<u64> {
    places
        .iter()
        .filter(|(_, p)| p.busy == 0 && matching(p))
        .min_by_key(|(id, p)| (p.idle_since, **id))
        .map(|(id, _)| *id)
}

/// Gives a place up at once (it counts as free from now on) and tells its connection to close.
fn close(taken: &mut Taken, id: u64) {
    if let Some(place) = taken.places.remove(&id) {
        taken.closing.insert(id);
        place.close.cancel();
    }
}

/// One connection's place: given back when dropped.
#[derive(Debug)]
pub(super) struct Ticket {
    places: Arc<Places>,
    id: u64,
    close: CancellationToken,
    /// Requests in progress, also once the place was taken back (a request that raced in).
    in_progress: AtomicUsize,
}

impl Ticket {
    /// Resolves when the place was taken back to make room: the connection closes.
    pub(super) async fn closed(&self) {
        self.close.cancelled().await;
    }

    /// Whether a request is in progress on it.
    pub(super) fn is_busy(&self) -> bool {
        self.in_progress.load(Ordering::SeqCst) > 0
    }

    /// Marks a request in progress until the guard drops.
    pub(super) fn busy(self: &Arc<Self>) -> Busy {
        self.in_progress.fetch_add(1, Ordering::SeqCst);
        if let Some(place) = self.places.lock().places.get_mut(&self.id) {
            place.busy += 1;
        }
        Busy {
            ticket: self.clone(),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut taken = self.places.lock();
        taken.places.remove(&self.id);
        taken.closing.remove(&self.id);
    }
}

/// A request in progress on a connection (see [`Ticket::busy`]).
#[derive(Debug)]
pub(super) struct Busy {
    ticket: Arc<Ticket>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.ticket.in_progress.fetch_sub(1, Ordering::SeqCst);
        let mut taken = self.ticket.places.lock();
        if let Some(place) = taken.places.get_mut(&self.ticket.id) {
            place.busy = place.busy.saturating_sub(1);
            if place.busy == 0 {
                place.idle_since = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn connections_closed_to_make_room_count_until_their_tickets_go() {
        let places = Places::new(8, 8, Duration::from_secs(10));
        assert_eq!(places.slack(), 1);
        let tickets: Vec<Ticket> = (0..8)
            .map(|_| places.enter(ip(1), false).unwrap().0)
            .collect();
        let (_ninth, made_room) = places.enter(ip(2), false).unwrap();
        assert!(made_room, "the oldest idle one made room");
        assert!(tickets[0].close.is_cancelled());
        // The closed one has not let its socket go: one more would pass the cap and its slack.
        assert_eq!(places.enter(ip(3), false).unwrap_err(), NoPlace::Closing);
        drop(tickets);
        assert!(
            places.enter(ip(3), false).is_ok(),
            "gone, it no longer counts"
        );
    }

    #[test]
    fn a_client_past_its_share_gives_up_its_own_oldest_idle_connection() {
        let places = Places::new(8, 2, Duration::from_secs(10));
        let (other, _) = places.enter(ip(1), false).unwrap();
        let (first, _) = places.enter(ip(2), false).unwrap();
        let (second, _) = places.enter(ip(2), false).unwrap();
        let (third, made_room) = places.enter(ip(2), false).unwrap();
        assert!(made_room);
        assert!(first.close.is_cancelled(), "its oldest made room");
        assert!(!second.close.is_cancelled() && !third.close.is_cancelled());
        assert!(!other.close.is_cancelled(), "another client's is untouched");
        assert_eq!(places.taken(), 3);
        // Busy, they are kept: the newest is refused instead.
        let (_a, _b) = (Arc::new(second), Arc::new(third));
        let (_busy_a, _busy_b) = (_a.busy(), _b.busy());
        assert_eq!(
            places.enter(ip(2), false).unwrap_err(),
            NoPlace::ClientShare
        );
    }

    #[test]
    fn at_the_cap_the_biggest_holder_gives_up_an_idle_connection() {
        let places = Places::new(3, 3, Duration::from_secs(10));
        let (small, _) = places.enter(ip(1), false).unwrap();
        let big: Vec<_> = (0..2)
            .map(|_| places.enter(ip(2), false).unwrap().0)
            .collect();
        let (newcomer, made_room) = places.enter(ip(3), false).unwrap();
        assert!(made_room);
        assert!(big[0].close.is_cancelled());
        assert!(!small.close.is_cancelled() && !newcomer.close.is_cancelled());
        let held: Vec<_> = [small, newcomer, big.into_iter().nth(1).unwrap()]
            .into_iter()
            .map(Arc::new)
            .collect();
        let _busy: Vec<_> = held.iter().map(Ticket::busy).collect();
        assert_eq!(places.enter(ip(4), false).unwrap_err(), NoPlace::Full);
    }

    #[test]
    fn idle_connections_are_kept_shorter_as_the_places_fill() {
        let places = Places::new(100, 100, Duration::from_secs(10));
        assert_eq!(places.idle_limit(50), Duration::from_secs(10));
        assert_eq!(places.idle_limit(75), Duration::from_secs(5));
        assert_eq!(places.idle_limit(90), Duration::from_secs(2));
        assert_eq!(places.idle_limit(100), PRESSURE_IDLE_FLOOR);
    }
}
