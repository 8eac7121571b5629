//! The registry's rows in `weld.streams` and each stream's records table: a stream's entry, its
//! epoch, and the table its records go to, made when the stream is first registered or written.

use std::sync::Arc;

use weld_pipeline::store::StreamEntry;
use weld_pipeline::sync::Locked;
use weld_pipeline::{Error, StreamName};

use super::view::TYPED;
use super::PostgresStore;
use crate::error::database;
use crate::statements::prepared;
use crate::{associations, registry, tables};

impl PostgresStore {
    /// The registry entry of stream `name`, if it has one.
    pub(super) async fn entry(&self, name: &StreamName) -> Result<Option<StreamEntry>, Error> {
        // Read on every delivery: prepared once per connection.
        let client = self.client().await?;
        let statement = prepared(
            &client,
            "SELECT entry::text FROM weld.streams WHERE name = $1 AND entry IS NOT NULL",
        )
        .await
        .map_err(database)?;
        let row = client
            .query_opt(&statement, &[&name.as_str()])
            .await
            .map_err(database)?;
        row.map(|row| decode_entry(row.get(0))).transpose()
    }

    /// Every registry entry, by name.
    pub(super) async fn entries(&self) -> Result<Vec<StreamEntry>, Error> {
        self.client()
            .await?
            .query(
                "SELECT entry::text FROM weld.streams WHERE entry IS NOT NULL ORDER BY name",
                &[],
            )
            .await
            .map_err(database)?
            .into_iter()
            .map(|row| decode_entry(row.get(0)))
            .collect()
    }

    /// Writes `entry` to the registry, makes its records table if missing, and announces it.
    pub(super) async fn register(&self, entry: &StreamEntry) -> Result<(), Error> {
        let value = serde_json::to_string(entry)
            .map_err(|e| Error::Bug(format!("a registry entry does not encode: {e}")))?;
        let table = tables::records_table(&entry.name, Some(&entry.config.source.kind))?;
        let client = self.client().await?;
        let table: String = client
            .query_one(
                "INSERT INTO weld.streams (name, entry, records_table) VALUES ($1, $2::text::jsonb, $3)
                 ON CONFLICT (name) DO UPDATE SET entry = EXCLUDED.entry
                 RETURNING records_table",
                &[&entry.name.as_str(), &value, &table],
            )
            .await
            .map_err(database)?
            .get(0);
        create_table(&client, &table).await?;
        self.remember(&entry.name, table);
        registry::announce(&**client, &entry.name).await
    }

    /// Deletes stream `name`: its tables and view, its ledger, runs and totals, its entry (the
    /// epoch raised), in one transaction that announces it.
    pub(super) async fn drop_stream(&self, name: &StreamName) -> Result<(), Error> {
        let Some(table) = self.table(name).await? else {
            return Ok(());
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(database)?;
        let stream = name.as_str();
        for drop in [
            format!("DROP VIEW IF EXISTS {}", tables::beside(&table, TYPED)?),
            format!("DROP TABLE IF EXISTS {}", associations::table_of(&table)?),
            format!("DROP TABLE IF EXISTS {table}"),
        ] {
            tx.execute(drop.as_str(), &[]).await.map_err(database)?;
        }
        for sql in [
            "DELETE FROM weld.batches WHERE stream = $1",
            "DELETE FROM weld.runs WHERE stream = $1",
            "DELETE FROM weld.totals WHERE stream = $1",
            // The epoch outlives the stream, raised: a batch of the deleted stream still on its
            // way cannot move the checkpoint of a new stream of the name.
            "UPDATE weld.streams SET entry = NULL, epoch = epoch + 1 WHERE name = $1",
        ] {
            tx.execute(sql, &[&stream]).await.map_err(database)?;
        }
        // Delivered with the commit, and only if it commits.
        registry::announce(&*tx, name).await?;
        tx.commit().await.map_err(database)?;
        self.tables.locked().remove(name);
        self.links.locked().remove(name);
        self.views.locked().remove(name);
        Ok(())
    }

    /// Raises the stream's epoch (a resync), announces it, and returns it.
    pub(super) async fn raise_epoch(&self, stream: &StreamName) -> Result<u64, Error> {
        self.ensure(stream, None).await?;
        let client = self.client().await?;
        let epoch: i64 = client
            .query_one(
                "UPDATE weld.streams SET epoch = epoch + 1 WHERE name = $1 RETURNING epoch",
                &[&stream.as_str()],
            )
            .await
            .map_err(database)?
            .get(0);
        registry::announce(&**client, stream).await?;
        Ok(epoch as u64)
    }

    /// The records table of `stream`, if it has one. Only `ensure` and `register`, which
    /// create the table, remember it: a table named here may have been dropped with its stream.
    pub(super) async fn table(&self, stream: &StreamName) -> Result<Option<Arc<str>>, Error> {
        if let Some(table) = self.cached(stream) {
            return Ok(Some(table));
        }
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT records_table FROM weld.streams WHERE name = $1",
                &[&stream.as_str()],
            )
            .await
            .map_err(database)?;
        Ok(row.map(|row| Arc::from(row.get::<_, String>(0))))
    }

    fn cached(&self, stream: &StreamName) -> Option<Arc<str>> {
        let tables = self.tables.locked();
        tables.get(stream).cloned()
    }

    fn remember(&self, stream: &StreamName, table: String) -> Arc<str> {
        let table: Arc<str> = table.into();
        let mut tables = self.tables.locked();
        tables.insert(stream.clone(), table.clone());
        table
    }

    /// The stream's row in `weld.streams` and its records table, made when missing (`kind` names
    /// the table's schema then).
    pub(super) async fn ensure(
        &self,
        stream: &StreamName,
        kind: Option<&str>,
    ) -> Result<Arc<str>, Error> {
        if let Some(table) = self.cached(stream) {
            return Ok(table);
        }
        let client = self.client().await?;
        let table: String = client
            .query_one(
                "INSERT INTO weld.streams (name, records_table) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
                 RETURNING records_table",
                &[
                    &stream.as_str(),
                    &tables::records_table(stream, kind)?.as_str(),
                ],
            )
            .await
            .map_err(database)?
            .get(0);
        create_table(&client, &table).await?;
        Ok(self.remember(stream, table))
    }
}

/// Creates a records table if it is missing.
async fn create_table(client: &tokio_postgres::Client, table: &str) -> Result<(), Error> {
    create_table_with(client, &tables::create(table)?).await
}

/// Runs `statements` that create a table if it is missing, in order, each alone. Two sessions
/// creating one at once race on the catalog (`IF NOT EXISTS` checks before it inserts): the
/// loser fails with a unique violation (23505), a duplicate table (42P07) or a duplicate type,
/// the table's row type (42710), whichever catalog row it reached second. Its schema, table or
/// index is then the winner's, and it goes on to the next statement.
pub(super) async fn create_table_with(
    client: &tokio_postgres::Client,
    statements: &[String],
) -> Result<(), Error> {
    for statement in statements {
        match client.execute(statement.as_str(), &[]).await {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.code().map(|c| c.code()),
                    Some("23505" | "42P07" | "42710")
                ) => {}
            Err(e) => return Err(database(e)),
        }
    }
    Ok(())
}

fn decode_entry(value: &str) -> Result<StreamEntry, Error> {
    serde_json::from_str(value)
        .map_err(|e| Error::Bug(format!("a registry entry does not decode: {e}")))
}
