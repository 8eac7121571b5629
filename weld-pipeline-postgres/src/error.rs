//! What the database's errors mean to the pipeline: transient (retry) or a bug.

use weld_pipeline::{Error, ErrorKind};

/// A database error as the pipeline's: transient when the database or the connection is away,
/// busy, shutting down, out of resources or past a statement timeout (the caller retries, a
/// worker keeps its outbox); anything else is a bug in this crate's SQL.
pub(crate) fn database(error: tokio_postgres::Error) -> Error {
    let transient = match error.code() {
        // No SQL state: the connection failed or closed.
        None => true,
        Some(code) => {
            let code = code.code();
            // 08: connection exception; 40: transaction rollback (serialization, deadlock);
            // 53: insufficient resources; 57: operator intervention (shutdown, cancel,
            // statement timeout); 58: system error (I/O).
            ["08", "40", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
        }
    };
    let kind = if transient {
        ErrorKind::Transient
    } else {
        ErrorKind::Bug
    };
    Error::new(kind, format!("PostgreSQL: {}", describe(&error)))
}

/// The error with the server's message, when it sent one; else with its causes (a failed TLS
/// handshake says why: `invalid peer certificate: UnknownIssuer`).
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        let more = error.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = error.source();
    }
    text
}

/// A pool checkout that failed: the database is away or the pool exhausted.
pub(crate) fn pool(error: deadpool_postgres::PoolError) -> Error {
    match error {
        deadpool_postgres::PoolError::Backend(error) => database(error),
        other => Error::new(
            ErrorKind::Transient,
            format!("PostgreSQL: no connection: {other}"),
        ),
    }
}
