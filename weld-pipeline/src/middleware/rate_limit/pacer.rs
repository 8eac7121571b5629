//! Pacers: who may start when.

use crate::sync::Locked;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Hands out start times so that calls stay within a budget.
///
/// `reserve` is called once per call, in call order, and must return at once: it books a slot
/// and says when it starts (`now` or later); it must never hand out slots that together exceed
/// the budget. `observe` lets a client report the budget a service stated. Both run under the
/// caller's lock-free fast path, so keep them short.
///
/// # Examples
///
/// A pacer that allows one call per second:
///
/// ```
/// use std::sync::Mutex;
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use weld_pipeline::middleware::Pacer;
///
/// #[derive(Debug, Default)]
/// struct OnePerSecond(Mutex<Option<Instant>>);
///
/// impl Pacer for OnePerSecond {
///     fn reserve(&self, now: Instant) -> Instant {
///         let mut last = self.0.lock().unwrap();
///         let start = last.map_or(now, |last| (last + Duration::from_secs(1)).max(now));
///         *last = Some(start);
///         start
///     }
/// }
/// ```
pub trait Pacer: Send + Sync + 'static {
    /// Books the next call and returns when it may start.
    fn reserve(&self, now: Instant) -> Instant;

    /// Learns the budget a service reported in a response received at `now`.
    fn observe(&self, now: Instant, budget: Budget) {
        let _ = (now, budget);
    }
}

/// A budget as a service states it: `max` calls per rolling `interval`, `remaining` of them
/// left in the current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Calls allowed per interval.
    pub max: u32,
    /// Calls left in the current interval.
    pub remaining: u32,
    /// The rolling window.
    pub interval: Duration,
}

/// A token bucket: up to `capacity` calls at once, refilled at `capacity` per `per`.
///
/// Over any span of time `t` it allows at most `capacity + t * capacity / per` calls.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: u32,
    refill: Duration,
    /// When the bucket would be full again if no more calls came: the "theoretical arrival time"
    /// of GCRA, which is a token bucket kept in one number.
    full_at: Mutex<Option<Instant>>,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens, refilling `capacity` per `per`.
    ///
    /// # Panics
    ///
    /// When `capacity` is 0 or `per` is zero: such a bucket would never let a call through.
    pub fn new(capacity: u32, per: Duration) -> Self {
        assert!(
            capacity > 0 && !per.is_zero(),
            "a token bucket needs a capacity and a period"
        );
        TokenBucket {
            capacity,
            refill: per / capacity,
            full_at: Mutex::new(None),
        }
    }
}

impl Pacer for TokenBucket {
    fn reserve(&self, now: Instant) -> Instant {
        let mut full_at = self.full_at.locked();
        // Taking a token pushes the full time one refill later. A call may start as soon as the
        // bucket holds a token, i.e. once the full time is at most `capacity` refills away.
        let base = full_at.map_or(now, |t| t.max(now));
        let depth = self.refill * self.capacity;
        let start = (base + self.refill)
            .checked_sub(depth)
            .map_or(now, |t| t.max(now));
        *full_at = Some(base + self.refill);
        start
    }
}

/// The finest spacing worth waiting for: tokio's timer ticks in milliseconds.
const MIN_SPACING: Duration = Duration::from_millis(1);

/// Paces calls to a budget a service reports: evenly spread, never more than `max` in any rolling
/// `interval` (stretched by a safety margin), and never more than the service says remain.
#[derive(Debug)]
pub struct BudgetPacer {
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    max: u32,
    interval: Duration,
    margin: Duration,
    /// Start times of the calls in the current rolling window, oldest first, plus placeholders
    /// for calls the service reported that this client did not make.
    starts: VecDeque<Instant>,
    last: Option<Instant>,
}

impl BudgetPacer {
    /// Starts from a known budget (`max` per `interval`) until the service reports its own.
    /// The margin is 2% of the interval plus 50 ms: a call started at the window's edge may
    /// reach the service a little later than a call started at its beginning.
    pub fn new(max: u32, interval: Duration) -> Self {
        BudgetPacer {
            state: Mutex::new(BudgetState {
                max: max.max(1),
                interval,
                margin: interval / 50 + Duration::from_millis(50),
                starts: VecDeque::new(),
                last: None,
            }),
        }
    }

    /// The budget this pacer works to (after what the service reported).
    pub fn budget(&self) -> (u32, Duration) {
        let state = self.state.locked();
        (state.max, state.interval)
    }
}

impl BudgetState {
    fn window(&self) -> Duration {
        self.interval + self.margin
    }

    fn forget_before(&mut self, now: Instant) {
        let window = self.window();
        while self.starts.front().is_some_and(|&t| t + window <= now) {
            self.starts.pop_front();
        }
    }
}

impl Pacer for BudgetPacer {
    fn reserve(&self, now: Instant) -> Instant {
        let mut state = self.state.locked();
        // Spread evenly, unless the spacing is finer than the timer can wait for (a budget of
        // thousands a second): then the rolling window alone keeps the count.
        let spacing = state.window() / state.max;
        let mut start = match state.last {
            Some(last) if spacing >= MIN_SPACING => (last + spacing).max(now),
            _ => now,
        };
        let window = state.window();
        // Never more than `max` starts in any rolling window: the new one waits for the oldest
        // of the last `max` to leave it.
        let max = state.max as usize;
        if state.starts.len() >= max {
            let oldest = state.starts[state.starts.len() - max];
            start = start.max(oldest + window);
        }
        state.starts.push_back(start);
        while state.starts.len() > max {
            state.starts.pop_front();
        }
        state.last = Some(start);
        start
    }

    fn observe(&self, now: Instant, budget: Budget) {
        let mut state = self.state.locked();
        if budget.max > 0 && !budget.interval.is_zero() {
            state.max = budget.max;
            state.interval = budget.interval;
            state.margin = budget.interval / 50 + Duration::from_millis(50);
        }
        state.forget_before(now);
        // The service counts calls this client cannot see (other clients of the account). Book
        // placeholders for the difference so that they occupy the window too.
        let spent = budget.max.saturating_sub(budget.remaining) as usize;
        let ours = state.starts.iter().filter(|&&t| t <= now).count();
        for _ in ours..spent {
            state.starts.push_front(now);
        }
        let mut sorted: Vec<_> = state.starts.drain(..).collect();
        sorted.sort();
        state.starts = sorted.into();
        let max = state.max as usize;
        while state.starts.len() > max {
            state.starts.pop_front();
        }
    }
}
