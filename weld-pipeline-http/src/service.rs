//! A data-streams service in one call: a [`Controller`] on any [`Storage`](weld_pipeline::store::Storage)
//! (sled by default), its transport listener and its HTTP API (feature `api`), with the
//! [dashboard](crate::dashboard) at `/` beside it (feature `dashboard`).
//!
//! ```no_run
//! # async fn run() -> Result<(), weld_pipeline::Error> {
//! use std::sync::Arc;
//! use weld_pipeline::runtime::{shutdown_on_signals, Controller};
//! use weld_pipeline::source::{GeneratorSources, SourceKinds};
//! use weld_pipeline::store::Storage;
//! use weld_pipeline::transport::MemoryTransport;
//! use weld_pipeline_http::service::{DataStreams, DataStreamsConfig};
//!
//! let shutdown = shutdown_on_signals();
//! let transport = MemoryTransport::new(); // or TCP, or HTTP: any transport
//! let kinds = SourceKinds::new().with(Arc::new(GeneratorSources));
//! // Or `PostgresStore::replica(..)` (weld-pipeline-postgres), or any store of yours.
//! let controller = Controller::new(Storage::sled("./data")?, kinds);
//! let config = DataStreamsConfig::new("./data");
//! let service = DataStreams::start(&transport, controller, config, shutdown).await?;
//! println!("API on http://{}", service.api_addr());
//! service.wait().await // until SIGINT or SIGTERM, then flushed
//! # }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weld_pipeline::runtime::Controller;
use weld_pipeline::{Error, Transport};

use futures::FutureExt;

use crate::api::{self, ApiConfig};
use crate::listener::{self, Limits};

/// How to run data-streams.
#[derive(Clone, Debug)]
pub struct DataStreamsConfig {
    /// The service's own files: the dashboard's logouts (the file `dashboard-logouts`) when it
    /// has a login. The store's files are the [`Storage`](weld_pipeline::store::Storage)'s
    /// business (the sled store may well live here too).
    pub data_dir: PathBuf,
    /// Where the HTTP API listens (`WELD_HTTP_ADDR`); port 0 picks a free one.
    pub http_addr: String,
    /// The API's token and metrics.
    pub api: ApiConfig,
    /// The API listener's connection cap and timeouts. The cap is lowered to the API's share
    /// of the descriptor limit at start ([`Descriptors`](crate::listener::Descriptors), which
    /// also raises the soft limit to the hard one).
    pub limits: Limits,
    /// Whether the API's listener serves the [dashboard](crate::dashboard) at `/` too, behind the
    /// API's token (feature `dashboard`; default: yes).
    pub dashboard: bool,
}

impl DataStreamsConfig {
    /// The service's files in `data_dir`, the API on `127.0.0.1:3000`, no token, no metrics, the
    /// dashboard beside it.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DataStreamsConfig {
            data_dir: data_dir.into(),
            http_addr: "127.0.0.1:3000".into(),
            api: ApiConfig::default(),
            limits: Limits::default(),
            dashboard: true,
        }
    }
}

/// A running data-streams: the controller accepting workers on its transport, and the API.
#[derive(Debug)]
pub struct DataStreams<T: Transport> {
    controller: Arc<Controller<T::Peer>>,
    api_addr: SocketAddr,
    tasks: JoinSet<Result<(), Error>>,
    shutdown: CancellationToken,
}

/// The dashboard's logouts, in [`LOGOUTS_FILE`] of the data directory (made when missing: a
/// service on PostgreSQL may have none yet).
#[cfg(feature = "dashboard")]
fn dashboard_logouts(data_dir: &std::path::Path) -> Result<crate::dashboard::Logouts, Error> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Error::Unavailable(format!(
            "cannot make the data directory {}: {e}",
            data_dir.display()
        ))
    })?;
    crate::dashboard::Logouts::open(data_dir.join(LOGOUTS_FILE))
}

/// The file in the data directory that keeps the dashboard's logouts.
#[cfg(feature = "dashboard")]
pub const LOGOUTS_FILE: &str = "dashboard-logouts";

/// How long requests still in progress at a shutdown may take before they are abandoned: a stop
/// waits for a worker's page boundary (seconds); a client that sends half a request and then
/// nothing must not keep the service from exiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl<T: Transport> DataStreams<T> {
    /// Listens on `transport` for workers of `controller` and on `config.http_addr` for the
    /// API, and serves both until `shutdown`. The controller keeps its streams in the
    /// [`Storage`](weld_pipeline::store::Storage) it was made with
    /// (`Controller::new(storage, kinds)`).
    ///
    /// # Errors
    ///
    /// When an address cannot be bound, or the dashboard's logouts cannot be read or written.
    pub async fn start(
        transport: &T,
        controller: Arc<Controller<T::Peer>>,
        config: DataStreamsConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, Error> {
        // The descriptors are shared out (and the soft limit raised) before anything listens.
        let _ = listener::Descriptors::of_this_process();
        let listener = transport.listen(controller.clone()).await?;
        let http = tokio::net::TcpListener::bind(&config.http_addr)
            .await
            .map_err(|e| {
                Error::Invalid(format!("cannot bind the API to {}: {e}", config.http_addr))
            })?;
        let api_addr = http
            .local_addr()
            .map_err(|e| Error::Unavailable(format!("the API's address: {e}")))?;
        let mut tasks = JoinSet::new();
        tasks.spawn(controller.clone().serve(listener, shutdown.clone()));
        #[cfg(feature = "dashboard")]
        let dashboard = match (config.dashboard, &config.api.token) {
            (false, _) => None,
            // Without a token there is no login, so nothing to log out of.
            (true, None) => Some(crate::dashboard::DashboardConfig::default()),
            (true, Some(token)) => Some(crate::dashboard::DashboardConfig {
                // A clone: the API and the dashboard share one throttle of wrong tokens.
                token: Some(token.clone()),
                logouts: dashboard_logouts(&config.data_dir)?,
            }),
        };
        let app = api::router(controller.clone(), config.api);
        #[cfg(feature = "dashboard")]
        let app = match dashboard {
            Some(dashboard) => app.merge(crate::dashboard::router(controller.clone(), dashboard)),
            None => app,
        };
        // Under the descriptor limit, with room for the store and the transport: idle sockets
        // on the API must never take the descriptor a commit needs.
        let limits = config
            .limits
            .capped_at(listener::Descriptors::of_this_process().per_listener);
        tasks.spawn(listener::serve(http, app, limits, shutdown.clone()).map(Ok));
        Ok(DataStreams {
            controller,
            api_addr,
            tasks,
            shutdown,
        })
    }

    /// Where the API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The controller, for in-process use (the quickstart's status print).
    pub fn controller(&self) -> &Arc<Controller<T::Peer>> {
        &self.controller
    }

    /// Waits until the service has stopped (after `shutdown`: no new workers or requests, the
    /// requests in progress answered, or abandoned after 10 s), then makes everything written
    /// durable.
    ///
    /// # Errors
    ///
    /// The first error of the listener, the API server or the final flush.
    pub async fn wait(mut self) -> Result<(), Error> {
        let mut result = Ok(());
        let shutdown = self.shutdown.clone();
        let grace = async move {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::pin!(grace);
        let mut abandoned = false;
        loop {
            let joined = tokio::select! {
                joined = self.tasks.join_next() => joined,
                () = &mut grace, if !abandoned => {
                    tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still open after the shutdown grace: abandoning them");
                    abandoned = true;
                    self.tasks.abort_all();
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let ended = match joined {
                Ok(ended) => ended,
                Err(error) if error.is_cancelled() => Ok(()),
                Err(error) => Err(Error::Bug(format!("a task panicked: {error}"))),
            };
            if let Err(error) = ended {
                tracing::error!(error = %error, "data-streams stopped on an error");
                // One part failed: the service is down, so the rest stops too.
                self.tasks.abort_all();
                if result.is_ok() {
                    result = Err(error);
                }
            }
        }
        self.controller.store().sync().await?;
        result
    }
}
