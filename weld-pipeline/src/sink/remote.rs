//! A sink on the other side of a transport.

use async_trait::async_trait;
use tower::{Service, ServiceExt};

use super::Sink;
use crate::batch::Batch;
use crate::error::{BoxError, Error};
use crate::message::{Commit, Request, Response};

/// A [`Sink`] that delivers each batch to a controller and returns its acknowledgement.
///
/// It wraps any `Service<Request, Response = Response>`: a
/// [`PeerService`](crate::transport::PeerService), usually behind timeout and retry layers.
/// Since the controller commits atomically and idempotently, a delivery retried after a lost
/// ack is acknowledged as [`Commit::Replayed`] and stored once.
#[derive(Clone, Debug)]
pub struct RemoteSink<S> {
    service: S,
}

impl<S> RemoteSink<S> {
    /// Delivers through `service`.
    pub fn new(service: S) -> Self {
        RemoteSink { service }
    }
}

#[async_trait]
impl<S> Sink for RemoteSink<S>
where
    S: Service<Request, Response = Response, Error = BoxError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        let response = self
            .service
            .clone()
            .oneshot(Request::Deliver(batch.clone()))
            .await
            .map_err(Error::from_boxed)?;
        match response.into_result()? {
            Response::Ack {
                batch: acked,
                commit,
            } if acked == batch.id() => Ok(commit),
            other => Err(Error::Bug(format!(
                "delivery of {:?} answered with {other:?}",
                batch.id()
            ))),
        }
    }
}
