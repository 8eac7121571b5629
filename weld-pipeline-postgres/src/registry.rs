//! Registry changes, announced to every replica on the database: `LISTEN/NOTIFY`.
//!
//! Each change of a stream's registry entry (put, resync, delete) notifies channel
//! `weld_registry` with the stream's name, in the same transaction as the change (delivered
//! when, and only if, it commits).
//! [`PostgresStore::watch_registry`](crate::PostgresStore::watch_registry) listens on a
//! connection of its own and hands the names on. PostgreSQL delivers a notification only to connections
//! listening when it is sent: after the listening connection is lost and made again, it says
//! [`RegistryChange::Reconnected`], and whoever watches reads the whole registry again; a
//! periodic re-read covers the rest, so a lost notification only delays.

use std::future::poll_fn;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use weld_pipeline::lease::RegistryChange;
use weld_pipeline::{Error, StreamName};

use crate::connection::Dial;
use crate::error::database;

/// The channel of registry changes.
const CHANNEL: &str = "weld_registry";
const LISTEN: &str = "LISTEN weld_registry";
/// The first wait after a lost connection; it doubles up to [`MOST_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MOST_BACKOFF: Duration = Duration::from_secs(30);

/// Registry changes as they are announced, until dropped (which stops listening).
#[derive(Debug)]
pub struct RegistryChanges {
    changes: mpsc::Receiver<RegistryChange>,
    task: tokio::task::JoinHandle<()>,
}

impl RegistryChanges {
    /// The next change; `None` never, while it lives.
    pub async fn next(&mut self) -> Option<RegistryChange> {
        self.changes.recv().await
    }
}

impl Drop for RegistryChanges {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Notifies every listener that `stream`'s registry entry changed.
pub(crate) async fn announce(
    client: &impl tokio_postgres::GenericClient,
    stream: &StreamName,
) -> Result<(), Error> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &stream.as_str()])
        .await
        .map_err(database)?;
    Ok(())
}

/// Listens for the registry changes of every replica on the database `dial` reaches, on a
/// connection of its own, made again with backoff (0.5 s doubling to 30 s) when lost.
pub(crate) fn watch(dial: Dial) -> RegistryChanges {
    let (tell, changes) = mpsc::channel(256);
    let task = tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        let mut first = true;
        loop {
            let listened = match &dial.tls {
                Some(tls) => match dial.config.connect(tls.clone()).await {
                    Ok((client, connection)) => {
                        listen(client, connection, &tell, &mut first, &mut backoff).await
                    }
                    Err(error) => Err(database(error)),
                },
                None => match dial.config.connect(tokio_postgres::NoTls).await {
                    Ok((client, connection)) => {
                        listen(client, connection, &tell, &mut first, &mut backoff).await
                    }
                    Err(error) => Err(database(error)),
                },
            };
            match listened {
                // The watcher was dropped.
                Ok(()) => return,
                Err(error) => {
                    tracing::debug!(%error, ?backoff, "registry listener lost; connecting again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MOST_BACKOFF);
                }
            }
        }
    });
    RegistryChanges { changes, task }
}

/// Listens on one connection until it fails (an error) or nobody watches (`Ok`).
async fn listen<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    tell: &mpsc::Sender<RegistryChange>,
    first: &mut bool,
    backoff: &mut Duration,
) -> Result<(), Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The connection is driven here, beside the LISTEN that needs it.
    let listening = client.batch_execute(LISTEN);
    tokio::pin!(listening);
    let mut pending = Vec::new();
    loop {
        tokio::select! {
            done = &mut listening => {
                done.map_err(database)?;
                break;
            }
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n))) => pending.push(n.payload().to_owned()),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(database(error)),
                None => return Err(Error::Unavailable("the registry listener's connection closed".into())),
            },
        }
    }
    *backoff = FIRST_BACKOFF;
    if !std::mem::take(first) && tell.send(RegistryChange::Reconnected).await.is_err() {
        return Ok(());
    }
    for payload in pending {
        if !forward(tell, &payload).await {
            return Ok(());
        }
    }
    loop {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                if !forward(tell, n.payload()).await {
                    return Ok(());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(database(error)),
            None => {
                return Err(Error::Unavailable(
                    "the registry listener's connection closed".into(),
                ))
            }
        }
    }
}

/// Hands a notification on; false once nobody watches.
async fn forward(tell: &mpsc::Sender<RegistryChange>, payload: &str) -> bool {
    match StreamName::new(payload) {
        Ok(stream) => tell.send(RegistryChange::Stream(stream)).await.is_ok(),
        // Not ours to read; someone else's NOTIFY on the channel.
        Err(_) => !tell.is_closed(),
    }
}
