//! The throttle of token guesses: wrong tokens counted per client, with a backoff that makes
//! guessing hopeless and a log that tells a guessing run once, not per guess.
//!
//! Every wrong token presented, as an API request's bearer token or at the dashboard's login,
//! counts against its client: its IP address as the listener saw it, an IPv6 client by its /64
//! (the block one host is given, and can pick addresses from at will). A client's first
//! [`FREE_FAILURES`] wrong tokens in a row cost nothing (a mistyped token, a script with an old
//! one). From then on each failure shuts the client out for a delay, doubling per failure up to
//! [`MAX_DELAY`]; while shut out, its requests (the right token too) are answered 429 with
//! `Retry-After` and not checked, so they neither count nor extend the delay. A right token
//! clears the client's count; so does a quiet [`FORGET_AFTER`].
//!
//! | wrong tokens in a row | the client's next check waits |
//! |---|---|
//! | 1 to 4 | nothing |
//! | 5, 6, 7, 8, 9, 10 | 1 s, 2 s, 4 s, 8 s, 16 s, 32 s |
//! | 11 and more | 60 s each: about 1,400 guesses a day, against a token of at least 16 bytes |
//!
//! The table holds at most [`MAX_CLIENTS`] clients (about 1 MiB): an attacker's many addresses
//! cannot pin memory. When it is full, the clients forgotten anyway go first, then the tenth that
//! failed longest ago: an address evicted so starts again with its free failures, which gives an
//! attacker who already has that many addresses nothing he had not.
//!
//! A request whose client the listener did not say (no `ConnectInfo`, as in a test that calls the
//! router itself) counts against one client shared by all such requests.
//!
//! The first wrong token of a period is logged in full (`warn`, with its client); the others are
//! counted, and the count is logged with the next failure once [`SUMMARY_EVERY`] has passed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;
use weld_pipeline::sync::Locked;

use axum::extract::ConnectInfo;
use axum::http::Extensions;
use metrics::counter;
use tokio::time::Instant;
use weld_pipeline::telemetry::{Tally, SUMMARY_EVERY};

/// Wrong tokens in a row that cost a client nothing.
pub(crate) const FREE_FAILURES: u32 = 4;
/// The delay after the first failure past the free ones; it doubles with each further one.
pub(crate) const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest delay: a minute keeps guessing hopeless. A person who shares an address with a
/// guesser (a NAT) is shut out with him for as long as he keeps guessing; behind a reverse
/// proxy, name it in the listener's trusted proxies (`WELD_TRUSTED_PROXIES`), so that each
/// client counts as itself.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(60);
/// A client with no failure for this long starts again from nothing: longer than any delay, so
/// that waiting out a delay never clears a count.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Clients the table holds: each takes under 100 bytes.
pub(crate) const MAX_CLIENTS: usize = 10_000;

/// Who presented a token: an address as the throttle counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Client {
    /// An IPv4 address, or an IPv6 /64 with the host's part zeroed.
    Ip(IpAddr),
    /// The listener did not say.
    Unknown,
}

impl Client {
    /// The client of a request, from the `ConnectInfo` the listener put in its extensions.
    pub(crate) fn of(extensions: &Extensions) -> Client {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(Client::Unknown, |ConnectInfo(peer)| Client::from(peer.ip()))
    }
}

impl From<IpAddr> for Client {
    fn from(ip: IpAddr) -> Self {
        Client::Ip(crate::listener::client_of(ip))
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Ip(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            Client::Ip(ip) => write!(f, "{ip}"),
            Client::Unknown => f.write_str("unknown"),
        }
    }
}

/// Where a token was presented: the `via` label of the throttle's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// An API request's `Authorization: Bearer`.
    Api,
    /// The dashboard's login form.
    Dashboard,
}

impl Via {
    fn label(self) -> &'static str {
        match self {
            Via::Api => "api",
            Via::Dashboard => "dashboard",
        }
    }
}

/// What the throttle says of a presented token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The right token, from a client not shut out.
    Allowed,
    /// A wrong token: answer 401.
    Wrong,
    /// The client is shut out: answer 429, with this wait as `Retry-After`.
    Throttled(Duration),
}

impl Verdict {
    /// The wait in whole seconds, rounded up, as `Retry-After` takes it.
    pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
        wait.as_millis().div_ceil(1_000).max(1) as u64
    }
}

/// One client's wrong tokens in a row.
#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last: Instant,
    /// Until when the client is shut out, once past its free failures.
    until: Option<Instant>,
}

/// The limits of a [`Guesses`]: the module's constants, smaller in its unit tests.
#[derive(Clone, Copy, Debug)]
struct Limits {
    free_failures: u32,
    first_delay: Duration,
    max_delay: Duration,
    forget_after: Duration,
    max_clients: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            free_failures: FREE_FAILURES,
            first_delay: FIRST_DELAY,
            max_delay: MAX_DELAY,
            forget_after: FORGET_AFTER,
            max_clients: MAX_CLIENTS,
        }
    }
}

impl Limits {
    /// How long a client that has just failed for the `failures`th time in a row is shut out.
    fn delay(&self, failures: u32) -> Option<Duration> {
        let past = failures.checked_sub(self.free_failures + 1)?;
        let factor = 1u32.checked_shl(past).unwrap_or(u32::MAX);
        Some(
            self.first_delay
                .checked_mul(factor)
                .map_or(self.max_delay, |delay| delay.min(self.max_delay)),
        )
    }
}

/// The table of clients that presented wrong tokens; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Guesses {
    limits: Limits,
    table: Mutex<Table>,
    /// Wrong tokens told in full once per period, then counted.
    told: Tally,
}

#[derive(Debug, Default)]
struct Table {
    clients: HashMap<Client, Entry>,
    /// When the current period of the log's count began.
    period: Option<Instant>,
}

impl Guesses {
    /// Judges a token from `client`, `right` or not, at `now`, and keeps the count.
    pub(crate) fn judge(&self, client: Client, via: Via, right: bool, now: Instant) -> Verdict {
        let mut table = self.table.locked();
        let limits = self.limits;
        let entry = table
            .clients
            .get(&client)
            .copied()
            .filter(|entry| now.saturating_duration_since(entry.last) < limits.forget_after);
        if let Some(until) = entry.and_then(|e| e.until).filter(|&until| until > now) {
            counter!("weld_token_throttled_total", "via" => via.label()).increment(1);
            return Verdict::Throttled(until - now);
        }
        if right {
            table.clients.remove(&client);
            return Verdict::Allowed;
        }
        counter!("weld_token_failures_total", "via" => via.label()).increment(1);
        let failures = entry.map_or(0, |e| e.failures).saturating_add(1);
        let until = limits.delay(failures).map(|delay| now + delay);
        if !table.clients.contains_key(&client) && table.clients.len() >= limits.max_clients {
            table.make_room(now, &limits);
        }
        table.clients.insert(
            client,
            Entry {
                failures,
                last: now,
                until,
            },
        );
        self.tell(&mut table, client, via, now);
        Verdict::Wrong
    }

    /// Logs a wrong token: the first of a period in full, the rest as a count.
    fn tell(&self, table: &mut Table, client: Client, via: Via, now: Instant) {
        let period = *table.period.get_or_insert(now);
        if now.saturating_duration_since(period) >= SUMMARY_EVERY {
            table.period = Some(now);
            let more = self.told.take();
            if more > 0 {
                let shut_out = table
                    .clients
                    .values()
                    .filter(|e| e.until.is_some_and(|until| until > now))
                    .count();
                tracing::warn!(
                    failures = more,
                    clients = table.clients.len(),
                    shut_out,
                    "more wrong API tokens were presented in the last period (counted, not logged one by one)"
                );
            }
        }
        if self.told.record() {
            tracing::warn!(
                client = %client,
                via = via.label(),
                "a wrong API token was presented; more are counted and their number logged every 30 s while they come"
            );
        }
    }

    #[cfg(test)]
    fn with_limits(limits: Limits) -> Self {
        Guesses {
            limits,
            ..Guesses::default()
        }
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.table.lock().unwrap().clients.len()
    }
}

impl Table {
    /// Frees at least one place: the clients forgotten anyway, else the tenth that failed
    /// longest ago (a tenth, so that a full table sorts once per many new clients, not per one).
    fn make_room(&mut self, now: Instant, limits: &Limits) {
        self.clients
            .retain(|_, e| now.saturating_duration_since(e.last) < limits.forget_after);
        if self.clients.len() < limits.max_clients {
            return;
        }
        let mut ages: Vec<(Instant, Client)> =
            self.clients.iter().map(|(c, e)| (e.last, *c)).collect();
        let evict = (limits.max_clients / 10).max(1);
        ages.select_nth_unstable_by_key(evict - 1, |(last, _)| *last);
        for (_, client) in &ages[..evict] {
            self.clients.remove(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(n: u32) -> Client {
        Client::from(IpAddr::V4(Ipv4Addr::from(n)))
    }

    #[test]
    fn the_delay_doubles_past_the_free_failures_up_to_a_minute() {
        let limits = Limits::default();
        let delays: Vec<_> = (1..=12).map(|n| limits.delay(n)).collect();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            delays,
            [
                None,
                None,
                None,
                None,
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(32),
                secs(60),
                secs(60)
            ]
        );
        assert_eq!(limits.delay(u32::MAX), secs(60));
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_is_the_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::from(a), Client::from(b));
        assert_ne!(Client::from(a), Client::from(other));
        assert_eq!(Client::from(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Client::from(mapped).to_string(), "10.0.0.1");
    }

    #[test]
    fn a_quiet_client_is_forgotten() {
        let guesses = Guesses::default();
        let start = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(guesses.judge(ip(1), Via::Api, false, start), Verdict::Wrong);
        }
        let later = start + FORGET_AFTER;
        // Counted from nothing again: free failures, not a delay.
        for _ in 0..FREE_FAILURES {
            assert_eq!(guesses.judge(ip(1), Via::Api, false, later), Verdict::Wrong);
        }
        assert_eq!(
            guesses.judge(ip(1), Via::Api, true, later),
            Verdict::Allowed
        );
    }

    #[test]
    fn many_addresses_fill_the_table_to_its_bound_and_no_further() {
        let guesses = Guesses::with_limits(Limits {
            max_clients: 100,
            ..Limits::default()
        });
        let start = Instant::now();
        for n in 0..10_000u32 {
            let now = start + Duration::from_millis(u64::from(n));
            guesses.judge(ip(n), Via::Api, false, now);
            assert!(guesses.clients() <= 100);
        }
        // The newest client is still counted: past its free failures it is shut out.
        let now = start + Duration::from_secs(10);
        for _ in 0..FREE_FAILURES {
            guesses.judge(ip(9_999), Via::Api, false, now);
        }
        assert!(matches!(
            guesses.judge(ip(9_999), Via::Api, true, now),
            Verdict::Throttled(_)
        ));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(Verdict::retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(Verdict::retry_after_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(Verdict::retry_after_secs(Duration::from_secs(60)), 60);
    }
}
