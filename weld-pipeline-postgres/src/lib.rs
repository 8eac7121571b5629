//! The PostgreSQL store of weld-pipeline: data-streams' registry, records, batch ledger,
//! checkpoints and run history in a database, where the records tables are the warehouse a
//! user's SQL reads.
//!
//! [`PostgresStore`] implements [`StreamStore`](weld_pipeline::store::StreamStore) and passes
//! the same conformance suite as the embedded sled store, so the controller and the API run on
//! it unchanged. It is a crate of its own so that sled-only users never compile a database
//! client.
//!
//! # The tables
//!
//! | table | holds |
//! |---|---|
//! | `weld.streams` | per stream: its registry entry (`entry jsonb`, null once deleted), its records table, its epoch |
//! | `weld.batches` | the ledger: `(stream, run_id, seq)` of every committed batch, with its epoch, the records it wrote, those it purged, how it moved the counts, the cursor it reached, and the replica that committed it (when several share the database) |
//! | `weld.runs` | the run history, one JSON document per run (and the figures of its summed and of its folded ledger rows) |
//! | `weld.totals` | per stream, the count deltas of folded ledger rows |
//! | `weld.leases` | per stream, which data-streams replica holds its lease, until when, the lease's epoch, and the worker the replica runs it on (see [`Leases`]) |
//! | `weld.migrations` | the schema versions applied |
//! | `<kind>.<stream>` (`hubspot.contacts`) | one row per record: `id` (primary key), `updated_at`, `created_at`, `archived`, `archived_at`, `properties jsonb`, `data json` (the whole record, as it came), `_weld_run_id`, `_weld_synced_at` |
//! | `<kind>.<stream>_typed` (a view) | the same rows, each property a source described as a column of its type (see `typed_view` below) |
//! | `<kind>.<stream>_associations` | one row per link of the records that carry `data.associations` (see `associations` below) |
//!
//! A stream's records table is named after the stream, in the schema of its source kind, when
//! the stream is first registered (a stream committed to before it is registered, as the
//! conformance suite does, gets schema `weld_records`). Rows are upserted, the newest
//! `updated_at` winning (an equal one replaces), and never deleted by a sync: an archived
//! record stays, marked. A purge ([`Record::purge`](weld_pipeline::Record::purge), a privacy
//! deletion: a HubSpot stream with `on_permanent_delete: purge`) is the one exception: it
//! deletes the record's row and its rows in the link table in the commit's transaction,
//! whatever the row's version, and leaves no tombstone; the typed view, a view of the table,
//! follows. The record's history at the source (`propertiesWithHistory`) lives in its `data`
//! and goes with the row. Deleting the stream drops its table, its view and its link table.
//!
//! ## The typed view
//!
//! A source describes its records' fields ([`Catalog`](weld_pipeline::source::Catalog); the
//! HubSpot source does at every run, from the portal's property definitions), and
//! [`StreamStore::describe`](weld_pipeline::store::StreamStore::describe) makes the view:
//!
//! | field kind | column type | read by |
//! |---|---|---|
//! | text | `text` | `properties ->> 'name'` as it is |
//! | number | `numeric` | `weld.to_numeric` |
//! | boolean | `boolean` | `weld.to_boolean` (`true`/`false`, any case) |
//! | date | `date` | `weld.to_date` (`YYYY-MM-DD`, or epoch milliseconds) |
//! | datetime | `timestamptz` | `weld.to_timestamptz` (RFC 3339, a time without offset as UTC, or epoch milliseconds) |
//! | list | `text[]` | `weld.to_list` (values joined by `;`) |
//!
//! Every cast is safe: a value that does not read as its type, and `''`, reads as `NULL`. The
//! table's own columns come first, then the properties by name, each column named so that no
//! two ever meet:
//!
//! | property name | column |
//! |---|---|
//! | empty | `property_` |
//! | one of the table's own columns (`id`, `updated_at`, ...) | `property_<name>` (`property_id`) |
//! | starting with `property_` | `property_<name>` (`property_property_id`) |
//! | any other | the name as it is |
//!
//! One whose column would pass 63 bytes, one whose name holds a NUL, and those past 1,500
//! columns are left out (they stay in `properties`, and a warning says so). Names reach the
//! view's statement quoted whatever the server's settings (`E'...'` literals, `"..."`
//! identifiers), and the statement runs alone: a name is a column, never SQL. The view is
//! replaced in place when its columns keep their places, else dropped and made again in one
//! transaction; a view of the user's own built on it keeps the old one, and `describe` says
//! why.
//!
//! ## The link table
//!
//! The records' `data.associations` (`{"<toType>":[{"id","types":[{"category","typeId",
//! "label"}]}]}`) as rows `from_id`, `to_type`, `to_id`, `category` (`''` when absent),
//! `type_id` (0 when absent), `label`; primary key `(from_id, to_type, to_id, category,
//! type_id)`, an index on `(to_type, to_id)`. The table is made when the first record with
//! associations is committed, and written in the commit's transaction: the links of every
//! record the batch writes are replaced by those of its stored document, so the table always
//! equals the documents (a member of the wrong shape gives no link, not a refused commit).
//!
//! # One transaction per commit
//!
//! A commit writes its own ledger row first (a replay finds the row and is acknowledged without
//! writing; a delivery of the same batch in flight waits on it, then finds it), reads the stored
//! versions of the batch's ids `FOR UPDATE`, upserts the records that win with multi-row
//! `INSERT ... ON CONFLICT` over `unnest` arrays (a row another commit inserted meanwhile is
//! decided again against it), records in its ledger row what it wrote and how the live and
//! archived counts moved, and records its run when it is the run's first batch. `COMMIT` is the
//! durability point; the ack follows it. Four round trips in all: `BEGIN`; the ledger lookup and
//! the locking read (and, for a replica, the check of its lease), pipelined; one statement writing the records, the ledger row and the run;
//! `COMMIT`. `created_at` and `archived_at` are read from the document in Rust (one bad value
//! leaves the column null instead of failing the commit, without a subtransaction per row).
//!
//! The hot statements (the commit's four, the delivery's registry read, a records page) are
//! prepared once per pooled connection and kept (at most 200 a connection), so PostgreSQL does
//! not parse and plan them again for every batch: through the processes, 1M records went from
//! 30.4k to 38.7k records/s with that alone. Commits take at most `pool_size -
//! read_connections` of the pool's connections ([`PostgresConfig::read_connections`], 8 of 16
//! by default): a records page, a status read or a lease renewal never waits for a connection
//! behind a worker's batches in flight.
//!
//! Nothing else is written per commit: the counts are the sums of the ledger's deltas, a run's
//! progress is read from its batches (as many as its highest `seq` plus one is no gap), and the
//! checkpoint is the cursor of the newest run's last batch before its first gap, counting only
//! batches of the stream's current epoch (a resync or a delete raises it). So commits of one
//! stream in flight at once wait for each other only where they write the same record.
//!
//! A status does not sum a whole run: every 64th batch of a run (`seq` 63, 127, ...), its commit
//! adds the run's committed rows up to the first still missing to the run's `summed_*` figures
//! in its `weld.runs` row (the commits of the run in flight meanwhile wait for it where they
//! meet that row until it commits, once every 64 batches), and
//! counts and the run history sum only the rows past them: fewer than 64 plus the batches in
//! flight, whatever the run's size (at 1M records, 10,000 rows a run, a status summed them all).
//! A run left with a gap for good (a batch dropped with its stopped stream) is summed up to the
//! gap; its rows past it are read until it is folded.
//!
//! The ledger does not grow with a stream's age: when a run's first batch commits, the rows of
//! older runs whose last batch committed over an hour ago are folded in the same transaction,
//! their count deltas into `weld.totals` and their run's figures (summed or not) into its
//! `weld.runs` row. Counts and the run history read the folded figures with the rows that
//! remain.

//! # Choices
//!
//! - **tokio-postgres with deadpool-postgres**: the client is the maintained async driver most
//!   Rust services use, with no compile-time database or macros; deadpool's pool is small,
//!   recycles connections, and a broken connection is replaced by the next checkout, so a
//!   database that went away is used again by itself once it is back. sqlx would bring its
//!   own runtime glue and a query macro system this crate does not need.
//! - **Migrations are an ordered list in [`migrations`]** with a version table, applied at
//!   start in one transaction under a table lock (several data-streams may start at once):
//!   a handful of statements do not justify a migration framework, and nothing is ever dropped
//!   and recreated.
//! - Every statement runs under a `statement_timeout` ([`PostgresConfig::statement_timeout`]).
//! - **`data` is `json`, `properties` is `jsonb`.** The whole record is kept as the text it
//!   came as, and a records page serves it byte for byte, as the sled store does: printing
//!   `jsonb` back as text was most of a page's time in the database (2.2 ms of 2.6 for 1,000
//!   records of 1 KiB). `properties`, what SQL queries, is `jsonb`, indexable; cast `data` to
//!   `jsonb` for its operators. Tables made before (migration 7) are rewritten once at start,
//!   without a statement timeout; one that cannot be (the user's own view, index or
//!   constraint holds it to `jsonb`) keeps `jsonb`, with a warning in PostgreSQL's log, and
//!   works as before. Rows written as `jsonb` are served as PostgreSQL prints `jsonb` (keys
//!   reordered) until they are written again. Data-streams of the version before must be
//!   stopped first: they read association links with `jsonb` functions.
//! - `jsonb` cannot hold a NUL character: a `\u0000` in a string of a record is stored as
//!   U+FFFD (the rest of the document as it came) rather than refusing the commit for good.
//! - **TLS** with `sslmode=require` in the URL: rustls (ring), through tokio-postgres-rustls,
//!   verifying the server's certificate against Mozilla's roots and
//!   [`PostgresConfig::ca_file`]. Without it the store connects plain: `prefer` would take TLS
//!   from a server that offers it and then refuse a certificate nothing vouches for.
//! - **Bulk writes are multi-row `INSERT ... SELECT FROM unnest(...)`**, not `COPY`: measured
//!   on batches of 100 x 1 KiB with eight in flight, binary `COPY` into a temporary table and
//!   an upsert from it moved 0.83-0.86x the records per second of the `unnest` upsert (one
//!   more round trip per batch, and a table to fill and empty).
//!
//! # Example
//!
//! ```no_run
//! use weld_pipeline_postgres::{PostgresConfig, PostgresStore};
//!
//! # async fn run() -> Result<(), weld_pipeline::Error> {
//! let store = PostgresStore::open(&PostgresConfig::new("postgres://weld@127.0.0.1:5432/weld")).await?;
//! # let _ = store;
//! # Ok(())
//! # }
//! ```

mod associations;
mod config;
mod connection;
mod error;
mod fence;
mod leases;
pub mod migrations;
mod registry;
mod sql;
mod statements;
mod storage;
mod store;
mod tables;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod typed_view;

pub use config::PostgresConfig;
pub use leases::Leases;
pub use registry::RegistryChanges;
pub use store::PostgresStore;
pub use weld_pipeline::lease::{Holder, Lease, RegistryChange};
