//! A peer as a tower service, so middleware can wrap deliveries.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::Service;

use super::Peer;
use crate::error::BoxError;
use crate::message::{Request, Response};

/// A [`Peer`] as a `Service<Request>`: wrap it in timeout, retry or concurrency-limit layers.
///
/// A [`Response::Refused`] becomes an error carrying the kind the peer gave it, so a retry layer
/// above retries transient refusals and gives up on permanent ones.
#[derive(Clone, Debug)]
pub struct PeerService<P> {
    peer: P,
}

impl<P> PeerService<P> {
    /// Wraps a peer.
    pub fn new(peer: P) -> Self {
        PeerService { peer }
    }
}

impl<P: Peer> Service<Request> for PeerService<P> {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Flow control is the transport's (its in-flight limit) and the layers' above.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let peer = self.peer.clone();
        Box::pin(async move {
            let response = peer.request(request).await?;
            Ok(response.into_result()?)
        })
    }
}
