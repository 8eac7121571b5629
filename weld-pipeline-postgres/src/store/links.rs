//! The association link table a stream's commits keep: made when the first record with
//! associations is about to be written, and refreshed in each commit's transaction from the
//! documents it wrote (see [`crate::associations`] for its shape).

use weld_pipeline::sync::Locked;
use weld_pipeline::{Error, Record, StreamName};

use super::streams::create_table_with;
use super::PostgresStore;
use crate::associations;
use crate::error::database;

impl PostgresStore {
    /// The association link table of `stream` when its commits keep one: it exists, or it is
    /// made now because one of the `records` about to be written carries associations (looked
    /// for only while the table is not known to exist). Made outside the commit's transaction,
    /// so two commits making it at once do not abort each other.
    pub(super) async fn links(
        &self,
        stream: &StreamName,
        table: &str,
        records: &[Record],
    ) -> Result<Option<String>, Error> {
        let links = associations::table_of(table)?;
        let known = self.links.locked().get(stream).copied();
        let exists = match known {
            Some(true) => true,
            Some(false) | None
                if records
                    .iter()
                    .any(|r| associations::carried_by(r.data.as_bytes())) =>
            {
                let client = self.client().await?;
                create_table_with(&client, &associations::create(&links)).await?;
                true
            }
            Some(false) => false,
            None => self
                .client()
                .await?
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&links])
                .await
                .map_err(database)?
                .get(0),
        };
        self.links.locked().insert(stream.clone(), exists);
        Ok(exists.then_some(links))
    }
}

/// Replaces, in the link table `links`, the links of the records `written` to `table` by those
/// of their stored documents.
pub(super) async fn refresh(
    tx: &tokio_postgres::Transaction<'_>,
    links: &str,
    table: &str,
    written: &[&str],
) -> Result<(), Error> {
    let (clear, fill) = (
        associations::clear_sql(links),
        associations::fill_sql(links, table),
    );
    // One after the other: pipelined, the fill could run first (a join polls its futures in
    // turn, not in order) and the clear would then remove what it wrote.
    tx.execute(&clear, &[&written]).await.map_err(database)?;
    tx.execute(&fill, &[&written]).await.map_err(database)?;
    Ok(())
}
