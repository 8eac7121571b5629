//! Connections to the database: the pool every operation checks one out of (the schema
//! migrated on the first), the settings each connection opens with, and how to open one outside
//! the pool (to listen for notifications).
//!
//! A broken connection is replaced by the next checkout, so a database that went away is used
//! again by itself once it is back; until then a checkout fails transiently within
//! [`PostgresConfig::connect_timeout`].

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;
use weld_pipeline::Error;

use crate::config::PostgresConfig;
use crate::error::pool as pool_error;
use crate::{migrations, tls};

/// How long the database lets a connection of ours sit idle inside a transaction before it ends
/// the session. Our transactions send their statements back to back: one idle this long
/// belongs to a process that froze (SIGSTOP, a VM paused) mid-commit, and its locks (a lease's
/// key-share lock among them) must not keep another replica from taking its streams.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// The pooled connections to one database. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub(crate) struct Connections {
    pool: Pool,
    /// Set once the schema is migrated: by the first connection checked out, which may come
    /// long after the store was made while the database was away.
    migrated: Arc<tokio::sync::OnceCell<()>>,
    /// How to open a connection of its own, outside the pool.
    dial: Dial,
}

/// The configuration of the pool's connections, for one outside it.
#[derive(Clone)]
pub(crate) struct Dial {
    pub(crate) config: Arc<tokio_postgres::Config>,
    pub(crate) tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connections {
    /// The pool of the database at `config.url`, without connecting.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a URL that does not parse or a CA file that does not read.
    pub(crate) fn new(config: &PostgresConfig) -> Result<Self, Error> {
        let pg = settings(config)?;
        let recycling = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let (manager, dial) = match pg.get_ssl_mode() {
            SslMode::Require => {
                let tls = tls::connector(config.ca_file.as_deref())?;
                let dial = Dial::of(&pg, Some(tls.clone()));
                (Manager::from_config(pg, tls, recycling()), dial)
            }
            _ => {
                // Without `sslmode=require`, plain: `prefer` would take TLS from a server that
                // offers it and then refuse a certificate nothing vouches for.
                let mut pg = pg;
                pg.ssl_mode(SslMode::Disable);
                let dial = Dial::of(&pg, None);
                (Manager::from_config(pg, NoTls, recycling()), dial)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| Error::Bug(format!("the PostgreSQL pool cannot be built: {e}")))?;
        Ok(Connections {
            pool,
            migrated: Arc::default(),
            dial,
        })
    }

    /// A connection, the schema migrated.
    ///
    /// # Errors
    ///
    /// Transient when the database cannot be reached or the pool has no connection free in
    /// time; what migrating the schema gives, the first time.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client, Error> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        if self.migrated.get().is_none() {
            self.migrated
                .get_or_try_init(|| async { migrations::apply(&mut client).await.map(|_| ()) })
                .await?;
        }
        Ok(client)
    }

    /// How to open a connection outside the pool.
    pub(crate) fn dial(&self) -> &Dial {
        &self.dial
    }

    /// The pool's size and use, for `Debug`.
    pub(crate) fn status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }
}

impl Dial {
    fn of(
        config: &tokio_postgres::Config,
        tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    ) -> Self {
        Dial {
            config: Arc::new(config.clone()),
            tls,
        }
    }
}

/// The settings every connection opens with: `config.url`, every statement under the
/// configured timeout, and no transaction left idle for long.
fn settings(config: &PostgresConfig) -> Result<tokio_postgres::Config, Error> {
    let mut pg: tokio_postgres::Config = config
        .url
        .parse()
        .map_err(|e| Error::Invalid(format!("the PostgreSQL URL does not parse: {e}")))?;
    pg.options(format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        config.statement_timeout.as_millis(),
        IDLE_IN_TRANSACTION.as_millis()
    ));
    pg.connect_timeout(config.connect_timeout);
    pg.application_name("weld-pipeline");
    Ok(pg)
}
