//! A stream's typed view: its records table with each property its source describes as a column
//! of its type (the columns are written by [`crate::typed_view`]; this makes and replaces the
//! view in the database).

use weld_pipeline::source::Schema;
use weld_pipeline::sync::Locked;
use weld_pipeline::{Error, StreamName};

use super::PostgresStore;
use crate::error::database;
use crate::{sql, tables, typed_view};

/// The suffix of a stream's typed view.
pub(super) const TYPED: &str = "_typed";

impl PostgresStore {
    /// Makes the typed view of `stream` from `schema`, unless this process made it from the
    /// same schema already.
    pub(super) async fn typed_view(
        &self,
        stream: &StreamName,
        schema: &Schema,
    ) -> Result<(), Error> {
        let table = self.ensure(stream, None).await?;
        let view = tables::beside(&table, TYPED)?;
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (&*table, schema).hash(&mut hasher);
            hasher.finish()
        };
        let made = self.views.locked().get(stream).copied();
        if made == Some(fingerprint) {
            return Ok(());
        }
        let left_out = self.make_view(&table, &view, schema).await?;
        if left_out > 0 {
            tracing::warn!(stream = %stream, view, left_out, "properties left out of the typed view: their columns would pass 63 bytes, their names hold a NUL or repeat, or the view has 1,500 columns; they stay in the properties column");
        }
        tracing::info!(stream = %stream, view, fields = schema.fields.len(), "typed view made");
        self.views.locked().insert(stream.clone(), fingerprint);
        Ok(())
    }

    /// Makes the typed view `view` of `table` from `schema`, replacing one made from another
    /// schema; returns how many properties it left out. Replacing keeps the view's grants, but
    /// PostgreSQL replaces a view only when its columns stay in place: a property added before
    /// others or one removed means the view is dropped and made again, in the same transaction
    /// (a reader never sees it missing). A view of the user's own built on it stops that: the
    /// old view then stays, and the error says why. Processes sharing the database make it one
    /// at a time.
    async fn make_view(&self, table: &str, view: &str, schema: &Schema) -> Result<usize, Error> {
        let mut client = self.client().await?;
        let mut tx = client.transaction().await.map_err(database)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&(tables::fnv(view) as i64)],
        )
        .await
        .map_err(database)?;
        // Each statement alone, on the extended protocol: it carries the names of properties
        // a portal's users wrote, and the protocol refuses a second statement (see `sql`).
        let (replace, left_out) = typed_view::create_sql(table, view, schema, true);
        let savepoint = tx.savepoint("replace").await.map_err(database)?;
        match savepoint.execute(replace.as_str(), &[]).await {
            Ok(_) => savepoint.commit().await.map_err(database)?,
            Err(e) if e.code().map(|c| c.code()) == Some("42P16") => {
                savepoint.rollback().await.map_err(database)?;
                remake_view(&tx, table, view, schema).await?;
            }
            Err(e) if e.code().map(|c| c.code()) == Some("42809") => {
                return Err(Error::Invalid(format!(
                    "{view} exists and is not a view: the typed view cannot be made"
                )))
            }
            Err(e) => return Err(database(e)),
        }
        let comment = sql::literal(&format!(
            "The properties of {table}, each cast to its type; made by weld-pipeline from the source's property definitions."
        ))?;
        tx.execute(format!("COMMENT ON VIEW {view} IS {comment}").as_str(), &[])
            .await
            .map_err(database)?;
        tx.commit().await.map_err(database)?;
        Ok(left_out)
    }
}

/// Drops the typed view `view` and makes it again from `schema`, in `tx`: its columns moved, so
/// it cannot be replaced in place.
async fn remake_view(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    view: &str,
    schema: &Schema,
) -> Result<(), Error> {
    let (create, _) = typed_view::create_sql(table, view, schema, false);
    let dependents = |e: tokio_postgres::Error| match e.code().map(|c| c.code()) {
        Some("2BP01") => Error::Invalid(format!(
            "the typed view {view} cannot change: other objects depend on it ({})",
            e.as_db_error().map_or("", |d| d.message())
        )),
        _ => database(e),
    };
    tx.execute(format!("DROP VIEW IF EXISTS {view}").as_str(), &[])
        .await
        .map_err(dependents)?;
    tx.execute(create.as_str(), &[]).await.map_err(database)?;
    Ok(())
}
