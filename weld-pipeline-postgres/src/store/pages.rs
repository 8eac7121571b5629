//! Keyset pages of a stream's records table: pages of records with their documents, and the
//! reconciliation's inventory (ids, versions and archived flags only).
//!
//! Pages follow the key order (`octet_length(id), id`) and a page's token is the last key it
//! holds: every record that exists from the first page to the last is visited once, in its
//! latest version, while commits go on.

use weld_pipeline::source::{Held, HeldPage};
use weld_pipeline::store::{decode_token, encode_token, Archived, RecordPage};
use weld_pipeline::{Error, Json, Record, StreamName};

use super::millis::Millis;
use super::PostgresStore;
use crate::error::database;
use crate::statements::prepared;

impl PostgresStore {
    /// A page of `stream`'s rows after the token `after`, at most `limit` of those `filter`
    /// admits, in key order: `id`, its time (`updated_at`, read as [`Millis`]), `archived`, and
    /// `document` (a column expression), with the token of the next page. A stream without a
    /// table (never written, or deleted meanwhile) has no rows. When `registered`, nor has one
    /// without a registry entry in the statement's snapshot: a row read proves the stream
    /// exists.
    async fn keyset(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        document: &str,
        filter: &str,
        registered: bool,
    ) -> Result<(Vec<tokio_postgres::Row>, Option<String>), Error> {
        let after = after.map(decode_token).transpose()?;
        let Some(table) = self.table(stream).await? else {
            return Ok((Vec::new(), None));
        };
        let entry = if registered {
            "AND EXISTS (SELECT FROM weld.streams WHERE name = $3 AND entry IS NOT NULL)"
        } else {
            ""
        };
        let sql = format!(
            "SELECT id, updated_at, archived, {document} FROM {table}
             WHERE ($1::text IS NULL OR (octet_length(id), id) > (octet_length($1::text), $1::text))
               AND {filter} {entry}
             ORDER BY octet_length(id), id LIMIT $2"
        );
        let limit = limit.max(1);
        let rows_past = limit as i64 + 1;
        let name = stream.as_str();
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = if registered {
            &[&after, &rows_past, &name]
        } else {
            &[&after, &rows_past]
        };
        let client = self.client().await?;
        let statement = prepared(&client, &sql).await;
        let rows = match statement {
            Ok(statement) => client.query(&statement, params).await,
            Err(error) => Err(error),
        };
        let mut rows = match rows {
            Ok(rows) => rows,
            Err(e) if e.code().map(|c| c.code()) == Some("42P01") => vec![],
            Err(e) => return Err(database(e)),
        };
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = more
            .then(|| rows.last().map(|row| encode_token(row.get(0))))
            .flatten();
        Ok((rows, next))
    }

    /// A page of records with their documents (see `keyset`).
    pub(super) async fn page(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
        registered: bool,
    ) -> Result<RecordPage, Error> {
        let filter = match archived {
            Archived::Live => "NOT archived",
            Archived::Only => "archived",
            Archived::All => "true",
        };
        let (rows, next) = self
            .keyset(stream, after, limit, "data::text", filter, registered)
            .await?;
        let records = rows
            .into_iter()
            .map(|row| {
                let data: String = row.get(3);
                Record {
                    id: row.get(0),
                    updated_at: Millis::of(&row, 1),
                    archived: row.get(2),
                    amend: false,
                    purge: false,
                    data: Json::from_checked_bytes(data.into_bytes().into()),
                }
            })
            .collect();
        Ok(RecordPage { records, next })
    }

    /// A page of records of a stream that exists; `None` when there is no such stream.
    pub(super) async fn existing_page(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<Option<RecordPage>, Error> {
        // One statement for a page that has records, once the stream's table is known: they
        // prove the stream exists (see `keyset`). Only an empty page, or a token this store did
        // not make, asks the registry whether there is a stream at all: no such stream comes
        // first, as it does where the registry is asked first.
        match self.page(stream, after, limit, archived, true).await {
            Ok(page) if !page.records.is_empty() => Ok(Some(page)),
            Ok(page) => Ok(self.entry(stream).await?.map(|_| page)),
            Err(error @ Error::Invalid(_)) => match self.entry(stream).await? {
                Some(_) => Err(error),
                None => Ok(None),
            },
            Err(error) => Err(error),
        }
    }

    /// Ids, versions and archived flags only, in key order: the reconciliation's inventory
    /// reads no document.
    pub(super) async fn inventory(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<HeldPage, Error> {
        let (rows, next) = self
            .keyset(stream, after, limit, "NULL", "true", false)
            .await?;
        let records = rows
            .into_iter()
            .map(|row| Held {
                id: row.get(0),
                updated_at: Millis::of(&row, 1),
                archived: row.get(2),
            })
            .collect();
        Ok(HeldPage { records, next })
    }
}
