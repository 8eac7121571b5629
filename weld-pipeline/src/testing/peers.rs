//! A handler that answers, and the check that a connection still does: what every transport's
//! tests put on each side of a connection to prove it still carries requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::ErrorKind;
use crate::message::{Event, Hello, Request, Response};
use crate::stream::StreamName;
use crate::transport::{Handler, Peer};

/// Answers every stop by refusing it (permanently), echoing the stream's name, after a delay
/// the name gives in milliseconds (`s300`: 300 ms; any other name: none); answers every other
/// request `Started`. Counts the events it is given.
#[derive(Debug, Default)]
pub struct Answering {
    /// Events handled so far.
    pub events: AtomicU64,
}

#[async_trait]
impl Handler for Answering {
    async fn request(&self, _from: &Hello, request: Request) -> Response {
        let Request::Stop { stream } = request else {
            return Response::Started;
        };
        if let Some(ms) = stream
            .as_str()
            .strip_prefix('s')
            .and_then(|n| n.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Response::Refused {
            kind: ErrorKind::Permanent,
            message: stream.to_string(),
        }
    }

    async fn event(&self, _from: &Hello, _event: Event) {
        self.events.fetch_add(1, Ordering::SeqCst);
    }
}

/// Asserts that `peer`'s connection still answers a request within `deadline` (the other side
/// runs an [`Answering`]).
///
/// # Panics
///
/// When no answer comes by `deadline`, or the answer is not the refusal [`Answering`] gives.
pub async fn still_flowing(peer: &impl Peer, deadline: Duration) {
    let stream = StreamName::new("s0").unwrap();
    let answer = tokio::time::timeout(deadline, peer.request(Request::Stop { stream }))
        .await
        .expect("an answer before the deadline");
    assert!(matches!(answer, Ok(Response::Refused { .. })), "{answer:?}");
}
