//! The controller's store, asked over the worker's connection: the inventory a source
//! reconciles against, and the schemas it describes.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::Error;
use crate::message::{Request, Response};
use crate::source::{Catalog, HeldPage, Inventory, Schema};
use crate::stream::StreamName;
use crate::transport::{Peer, Transport};

/// The controller's store, asked and told over the worker's connection: what it holds, and
/// the fields of the streams this worker runs.
pub(super) struct PeerStore<T: Transport> {
    /// The connection to the controller, while there is one.
    pub(super) peer: watch::Receiver<Option<T::Peer>>,
}

impl<T: Transport> std::fmt::Debug for PeerStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerStore")
    }
}

/// How long the controller has to answer a request about its store.
const STORE_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl<T: Transport> PeerStore<T> {
    async fn ask(&self, request: Request, operation: &'static str) -> Result<Response, Error> {
        let peer = self.peer.borrow().clone().ok_or_else(|| {
            Error::Unavailable("not connected to the controller: its store cannot be asked".into())
        })?;
        tokio::time::timeout(STORE_REQUEST_TIMEOUT, peer.request(request))
            .await
            .map_err(|_| Error::Timeout {
                operation,
                after: STORE_REQUEST_TIMEOUT,
            })??
            .into_result()
    }
}

#[async_trait]
impl<T: Transport> Inventory for PeerStore<T> {
    async fn held(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<HeldPage, Error> {
        let request = Request::Inventory {
            stream: stream.clone(),
            after: after.map(str::to_owned),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        match self.ask(request, "inventory request").await? {
            Response::Inventory(page) => Ok(page),
            other => Err(Error::Bug(format!(
                "the controller answered an inventory request with {other:?}"
            ))),
        }
    }
}

#[async_trait]
impl<T: Transport> Catalog for PeerStore<T> {
    async fn describe(&self, stream: &StreamName, schema: &Schema) -> Result<(), Error> {
        let request = Request::Describe {
            stream: stream.clone(),
            schema: schema.clone(),
        };
        match self.ask(request, "schema description").await? {
            Response::Described => Ok(()),
            other => Err(Error::Bug(format!(
                "the controller answered a schema description with {other:?}"
            ))),
        }
    }
}
