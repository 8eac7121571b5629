//! The tables are the warehouse: a HubSpot sync lands in `hubspot.contacts`, one row per
//! record, where plain SQL reads it.
//!
//! | module | proves |
//! |---|---|
//! | `sync` | a sync lands in the records table, its typed view and its link table |
//! | `typed_view` | the typed view casts safely, follows the schema, and takes any name as a column |
//! | `links` | the link table follows every write of a record's associations |
//! | `ledger` | the ledger is summed and folded, and nothing read from it changes |
//! | `purge` | a purged record leaves no row in the table, its typed view or its link table |
//! | `documents` | a document is kept as it came, and an older `jsonb` table is migrated |
//!
//! The helpers below are what the modules share.

mod documents;
mod ledger;
mod links;
mod purge;
mod sync;
mod typed_view;

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;
use weld_pipeline::source::{Field, FieldKind, Schema};
use weld_pipeline::store::{Desired, RunState, StreamEntry, StreamStore};
use weld_pipeline::{
    Batch, Checkpoint, Json, Pipeline, Record, RunContext, RunId, RunOutcome, Sink, StreamName,
    Timestamp,
};
use weld_pipeline_hubspot::fake::{FakeConfig, FakeHubSpot, Mutation};
use weld_pipeline_hubspot::{self as hubspot, HubSpotAccount, HubSpotObject, Token};
use weld_pipeline_postgres::{testing, PostgresConfig, PostgresStore};

/// A running stream of HubSpot contacts named `stream`.
fn contacts_entry(stream: &StreamName) -> StreamEntry {
    StreamEntry {
        name: stream.clone(),
        config: serde_json::from_value(serde_json::json!({
            "source": {"kind": "hubspot", "object": "contacts"},
            "interval_secs": 300,
        }))
        .unwrap(),
        desired: Desired::Running,
        last_error: None,
    }
}

/// A database of its own on the shared cluster, its store and a client for a user's SQL.
async fn warehouse(name: &str) -> Option<(PostgresStore, tokio_postgres::Client)> {
    let cluster = testing::shared()?;
    cluster.create_database(name).await;
    let url = cluster.url(name);
    let store = PostgresStore::open(&PostgresConfig::new(&url))
        .await
        .unwrap();
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    Some((store, client))
}

/// A batch of `records` (`(id, version, document)`) as run 1's batch `seq`.
fn batch(stream: &StreamName, seq: u64, records: &[(&str, i64, serde_json::Value)]) -> Batch {
    Batch::new(stream.clone(), RunId(1), seq)
        .with_records(
            records
                .iter()
                .map(|(id, at, data)| {
                    Record::new(
                        *id,
                        Timestamp::from_millis(*at),
                        Json::parse(data.to_string().into_bytes()).unwrap(),
                    )
                })
                .collect(),
        )
        .with_cursor(Checkpoint::from_bytes(format!("c{seq}")))
}

fn field(name: &str, kind: FieldKind) -> Field {
    Field {
        name: name.into(),
        kind,
    }
}

/// Commits `document` as record `1`, version `seq + 1`, in run 1's batch `seq`.
async fn commit_document(store: &PostgresStore, stream: &StreamName, seq: u64, document: &str) {
    let mut batch = batch(stream, seq, &[]);
    batch.records = vec![Record::new(
        "1",
        Timestamp::from_millis(seq as i64 + 1),
        Json::parse(document.as_bytes().to_vec()).unwrap(),
    )];
    store.commit(&batch).await.unwrap();
}

/// The document of the stream's first record, as the API's records page serves it.
async fn first_document(store: &PostgresStore, stream: &StreamName) -> String {
    let page = store
        .existing_records(stream, None, 10, weld_pipeline::store::Archived::All)
        .await
        .unwrap()
        .expect("the stream exists");
    String::from_utf8(page.records[0].data.as_bytes().to_vec()).unwrap()
}

async fn records_table(client: &tokio_postgres::Client, stream: &StreamName) -> String {
    client
        .query_one(
            "SELECT records_table FROM weld.streams WHERE name = $1",
            &[&stream.as_str()],
        )
        .await
        .unwrap()
        .get(0)
}

/// The type of the table's `data` column, and its first row's property `a`.
async fn document_column(client: &tokio_postgres::Client, table: &str) -> (String, String) {
    let row = client
        .query_one(
            &format!("SELECT pg_typeof(data)::text, properties ->> 'a' FROM {table} LIMIT 1"),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// A property name as a SQL identifier, for a user's query of the typed view.
fn quoted(column: &str) -> String {
    format!("\"{}\"", column.replace('"', "\"\""))
}

/// The typed view's columns, in order.
async fn view_columns(client: &tokio_postgres::Client, schema: &str, view: &str) -> Vec<String> {
    client
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&schema, &view],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Whether the relation `name` (schema-qualified) exists.
async fn exists(client: &tokio_postgres::Client, name: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap()
        .get(0)
}

/// The one row of `view` with the columns `columns` (properties' own names, quoted here), as text.
async fn view_row(
    client: &tokio_postgres::Client,
    view: &str,
    columns: &[&str],
) -> Vec<Option<String>> {
    let list: Vec<String> = columns.iter().map(|c| quoted(c)).collect();
    let row = client
        .query_one(&format!("SELECT {} FROM {view}", list.join(", ")), &[])
        .await
        .unwrap();
    (0..columns.len()).map(|i| row.get(i)).collect()
}
