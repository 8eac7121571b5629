//! The process's file descriptors, shared out so that the listeners' caps sit under the limit.
//!
//! Every connection is a descriptor. With the common soft limit of 1,024 and a listener cap of
//! 1,024, idle sockets alone could take every descriptor: an attack run did, and the store's
//! sync failed for want of one (it healed by itself four times in 40 s, acknowledging nothing
//! meanwhile). So at start the soft limit is raised to the hard one where allowed (as Go's
//! runtime does for every program: the soft limit of 1,024 is a leftover of `select(2)`, which
//! nothing here uses), and each listener's cap is at most its share of what is left after a
//! reserve for everything else.

use std::sync::OnceLock;

/// Descriptors kept for everything but the listeners' connections: the store (sled's files, or
/// PostgreSQL's pool), outgoing HTTP, logs, the runtime; and the TCP transport's 128 handshake
/// places, which it bounds itself.
pub const RESERVE: u64 = 64 + 128;

/// Listeners sharing what is left: the API and the transport.
const LISTENERS: u64 = 2;

/// How the descriptors were shared out (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptors {
    /// The soft limit in force (`ulimit -n`), after raising it.
    pub limit: u64,
    /// The soft limit found at start, when raising it changed it.
    pub raised_from: Option<u64>,
    /// Descriptors already open when they were shared out.
    pub open: u64,
    /// The most connections each listener holds open: its share of
    /// `limit - open - `[`RESERVE`] less the eighth of it that connections closed to make room
    /// may hold until they are gone, at least 8.
    pub per_listener: usize,
}

/// The largest cap whose connections, with the eighth more that closed ones may hold until
/// they are gone ([`Places`](super::places)), fit in `share` descriptors.
fn cap_within(share: usize) -> usize {
    let mut cap = share / 9 * 8 + share % 9;
    while cap > 0 && cap + cap.div_ceil(8) > share {
        cap -= 1;
    }
    cap
}

impl Descriptors {
    /// The share for a soft `limit` with `open` descriptors already open.
    pub fn share(limit: u64, open: u64) -> Self {
        let left = limit.saturating_sub(open).saturating_sub(RESERVE);
        Descriptors {
            limit,
            raised_from: None,
            open,
            // At least a few places, however low the limit: a listener with none serves no one.
            per_listener: cap_within(usize::try_from(left / LISTENERS).unwrap_or(usize::MAX))
                .max(8),
        }
    }

    /// This process's share, worked out once: the soft limit raised to the hard one where
    /// allowed, the descriptors open counted (Linux: `/proc/self/fd`), the sizes logged.
    /// Where the limit cannot be read, the listeners keep their configured caps.
    pub fn of_this_process() -> &'static Descriptors {
        static SHARED: OnceLock<Descriptors> = OnceLock::new();
        SHARED.get_or_init(|| {
            let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok();
            let raised = rlimit::increase_nofile_limit(u64::MAX);
            let limit = match (&raised, before) {
                (Ok(limit), _) => *limit,
                (Err(_), Some((soft, _))) => soft,
                (Err(_), None) => u64::MAX,
            };
            let open = std::fs::read_dir("/proc/self/fd")
                .map(|entries| entries.count() as u64)
                .unwrap_or(0);
            let mut shared = Descriptors::share(limit, open);
            shared.raised_from = before.map(|(soft, _)| soft).filter(|soft| *soft != limit);
            if let Err(error) = &raised {
                tracing::warn!(error = %error, limit, "cannot raise the descriptor limit");
            }
            tracing::info!(
                limit,
                raised_from = ?shared.raised_from,
                open,
                reserve = RESERVE,
                per_listener = shared.per_listener,
                "descriptors: each listener's connection cap is at most its share of the limit"
            );
            shared
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_sit_under_the_limit_with_the_reserve_kept() {
        let shared = Descriptors::share(1024, 20);
        assert_eq!(shared.per_listener, 360);
        let held = |cap: usize| (cap + cap.div_ceil(8)) as u64;
        assert!(held(shared.per_listener) * LISTENERS + RESERVE + 20 <= 1024);
        assert_eq!(Descriptors::share(256, 20).per_listener, 19);
        assert!(held(19) * LISTENERS + RESERVE + 20 <= 256);
        assert_eq!(Descriptors::share(64, 20).per_listener, 8);
        assert!(Descriptors::share(1 << 20, 20).per_listener > 1024);
    }
}
