//! Reading ahead: the next page's call, sent while the current page is still being finished.
//!
//! A sync's pages form a chain: a search page is anchored after the last id of the one before,
//! a list page starts at the `after` the one before returned. Paged one request at a time, a
//! sync 150 ms away from HubSpot spends most of each page waiting, and uses a fraction of the
//! account's budget. Yet the next page's call is known as soon as the current page's *first*
//! answer arrives, before its associations are read, before the rest of a split property list
//! is fetched, before the records are delivered. So the fetcher starts that call there, drives
//! it beside the current page's remaining calls (when it has some: otherwise it is polled once,
//! going out at once or taking its turn of the budget), and keeps it for the next page.
//!
//! The next page then takes it only if it is the very call that page would make (the same
//! object, filters, anchor, properties), and only while it is fresh; anything else drops it,
//! and a run's first page drops whatever an earlier run left. So reading ahead never changes
//! what a page holds or where its checkpoint stands: the exactly-once rules of the windows stay
//! as they are. A call read ahead is paced, retried and timed by the same layers as any other.
//! It makes progress only while a page is being fetched: once a run stops asking for pages,
//! nothing new starts. (One still waiting for its turn when its page ends goes out when the
//! next page takes it: later than its turn was booked for, when the records are slow to
//! deliver.)

use std::future::Future;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;
use weld_pipeline::sync::Locked;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::ServiceExt;
use weld_pipeline::BoxError;

use super::calls::CallService;
use super::client::Call;

/// How long a call read ahead stays good for the page that asked for it: a bound on how old an
/// answer a page may take (a run's first page drops everything kept anyway).
const FRESH_FOR: Duration = Duration::from_secs(30);

/// A call sent ahead of the page that needs it.
pub(super) struct Ahead {
    call: Call,
    sent: Instant,
    answer: Answer,
}

enum Answer {
    Pending(BoxFuture<'static, Result<Bytes, BoxError>>),
    Ready(Result<Bytes, BoxError>),
}

impl Ahead {
    /// `call` through `service`, not yet polled: it starts when driven.
    pub(super) fn start(service: &CallService, call: Call) -> Ahead {
        let answer = Answer::Pending(Box::pin(service.clone().oneshot(call.clone())));
        Ahead {
            call,
            sent: Instant::now(),
            answer,
        }
    }

    /// Moves the call on as far as it goes now, keeping its answer once it has one.
    fn poll_progress(&mut self, cx: &mut std::task::Context<'_>) {
        if let Answer::Pending(future) = &mut self.answer {
            if let Poll::Ready(answer) = future.as_mut().poll(cx) {
                self.answer = Answer::Ready(answer);
            }
        }
    }

    /// Whether it may still be taken.
    fn usable(&self) -> bool {
        self.sent.elapsed() < FRESH_FOR
    }

    async fn answer(self) -> Result<Bytes, BoxError> {
        match self.answer {
            Answer::Pending(future) => future.await,
            Answer::Ready(answer) => answer,
        }
    }
}

/// The calls a fetcher read ahead, kept for the next page.
#[derive(Default)]
pub(super) struct Lookahead {
    kept: Mutex<Vec<Ahead>>,
}

impl Lookahead {
    /// Keeps `ahead` for the next page, in place of anything kept before.
    pub(super) fn keep(&self, ahead: impl IntoIterator<Item = Ahead>) {
        *self.kept.locked() = ahead.into_iter().collect();
    }

    /// Drops everything kept: a run's first page takes nothing an earlier run read.
    pub(super) fn clear(&self) {
        self.kept.locked().clear();
    }

    /// The answer to `call`: the one read ahead when it is this very call and fresh, otherwise
    /// a call made now through `service`.
    pub(super) async fn call(&self, service: &CallService, call: Call) -> Result<Bytes, BoxError> {
        match self.take(&call) {
            Some(ahead) => ahead.answer().await,
            None => service.clone().oneshot(call).await,
        }
    }

    /// `call` read ahead, when it was and is still fresh.
    pub(super) fn take(&self, call: &Call) -> Option<Ahead> {
        let mut kept = self.kept.locked();
        kept.retain(Ahead::usable);
        kept.iter()
            .position(|ahead| &ahead.call == call)
            .map(|at| kept.swap_remove(at))
    }
}

impl std::fmt::Debug for Lookahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.kept.lock().map(|k| k.len()).unwrap_or(0);
        f.debug_struct("Lookahead").field("kept", &kept).finish()
    }
}

/// Drives `main` to its end, moving every call of `ahead` on beside it. `main` is polled first,
/// so that the calls it starts at once take their turn of a budget before the calls read ahead
/// (calls it makes later, such as a retry, book theirs after).
pub(super) async fn beside<T>(ahead: &mut [Ahead], main: impl Future<Output = T>) -> T {
    let mut main = std::pin::pin!(main);
    std::future::poll_fn(|cx| {
        let done = main.as_mut().poll(cx);
        for ahead in ahead.iter_mut() {
            ahead.poll_progress(cx);
        }
        done
    })
    .await
}
