//! The store: [`StreamStore`] on PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use weld_pipeline::sync::Locked;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::{NoTls, Transaction};
use weld_pipeline::source::{Held, HeldPage};
use weld_pipeline::store::{
    decode_token, encode_token, upsert_counts, Archived, Counts, RecordPage, Resume, RunRecord,
    RunState, StreamEntry, StreamStore,
};
use weld_pipeline::{
    Batch, Checkpoint, Commit, Error, Json, Record, RunId, RunOutcome, Sink, StreamName, Timestamp,
};

use crate::error::{database, pool as pool_error};
use crate::{associations, migrations, sql, tables, tls, typed_view, PostgresConfig};

/// The suffix of a stream's typed view.
const TYPED: &str = "_typed";

/// How long the database lets a connection of ours sit idle inside a transaction before it ends
/// the session. Our transactions send their statements back to back: one idle this long
/// belongs to a process that froze (SIGSTOP, a VM paused) mid-commit, and its locks (a lease's
/// key-share lock among them) must not keep another replica from taking its streams.
const IDLE_IN_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(10);

/// A stored `timestamptz` as milliseconds since the Unix epoch, read from PostgreSQL's binary
/// form (microseconds since 2000-01-01) here rather than computed in SQL: `extract(epoch ...)`
/// works in `numeric`, and took a tenth of a records page's time on the database (0.2-0.3 of
/// 2.6 ms, 1,000 rows). Exact for every time the store writes (whole milliseconds).
struct Millis(i64);

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix milliseconds.
const POSTGRES_EPOCH_MS: i64 = 946_684_800_000;

impl<'a> tokio_postgres::types::FromSql<'a> for Millis {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let micros = i64::from_be_bytes(raw.try_into()?);
        Ok(Millis(micros.div_euclid(1000) + POSTGRES_EPOCH_MS))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::TIMESTAMPTZ
    }
}

impl Millis {
    /// The time of column `index` of `row`.
    fn of(row: &tokio_postgres::Row, index: usize) -> Timestamp {
        Timestamp::from_millis(row.get::<_, Millis>(index).0)
    }
}

/// The store of a controller, on PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Commits in progress, at most the pool's size less its read connections: what is left is
    /// for everything else.
    commits: Arc<tokio::sync::Semaphore>,
    /// Set once the schema is migrated: by `open`, or by the first connection of a store made
    /// with `new` while the database was away.
    migrated: Arc<tokio::sync::OnceCell<()>>,
    /// Each stream's records table, as `weld.streams` names it, once known.
    tables: Arc<Mutex<HashMap<StreamName, Arc<str>>>>,
    /// Per stream, whether its association link table exists, once known.
    links: Arc<Mutex<HashMap<StreamName, bool>>>,
    /// Per stream, a hash of the schema its typed view was last made from by this process.
    views: Arc<Mutex<HashMap<StreamName, u64>>>,
    /// The leases a replica's commits must hold ([`PostgresStore::fenced_by`]).
    fence: Option<crate::leases::Fence>,
    /// How to open a connection of its own, outside the pool (to listen for notifications).
    pub(crate) dial: Dial,
}

/// The configuration of the pool's connections, for one outside it.
#[derive(Clone)]
pub(crate) struct Dial {
    pub(crate) config: Arc<tokio_postgres::Config>,
    pub(crate) tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `config.url` and migrates its schema.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a URL that does not parse; a transient error when the database
    /// cannot be reached (retry with backoff).
    pub async fn open(config: &PostgresConfig) -> Result<Self, Error> {
        let store = Self::new(config)?;
        drop(store.client().await?);
        Ok(store)
    }

    /// The store of the database at `config.url`, without connecting: its first operation
    /// connects and migrates the schema, and every operation fails transiently while the
    /// database cannot be reached. A service can so start, and say why it cannot store, while
    /// the database is away (wrap it in [`Healing`](weld_pipeline::store::Healing)).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a URL that does not parse.
    pub fn new(config: &PostgresConfig) -> Result<Self, Error> {
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
        let recycling = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let (manager, dial) = match pg.get_ssl_mode() {
            SslMode::Require => {
                let tls = tls::connector(config.ca_file.as_deref())?;
                let dial = Dial {
                    config: Arc::new(pg.clone()),
                    tls: Some(tls.clone()),
                };
                (Manager::from_config(pg, tls, recycling()), dial)
            }
            _ => {
                // Without `sslmode=require`, plain: `prefer` would take TLS from a server that
                // offers it and then refuse a certificate nothing vouches for.
                pg.ssl_mode(SslMode::Disable);
                let dial = Dial {
                    config: Arc::new(pg.clone()),
                    tls: None,
                };
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
        let commits = config
            .pool_size
            .saturating_sub(config.read_connections)
            .max(1);
        Ok(PostgresStore {
            pool,
            commits: Arc::new(tokio::sync::Semaphore::new(commits)),
            migrated: Arc::default(),
            tables: Arc::default(),
            links: Arc::default(),
            views: Arc::default(),
            fence: None,
            dial,
        })
    }

    /// A page of `stream`'s rows after the token `after`, at most `limit` of those `filter`
    /// admits, in key order: `id`, its time (`updated_at`, read as [`Millis`]), `archived`, and
    /// `document` (a column expression), with the token of the next page. Keyset paging on the key order: every
    /// record that exists from the first page to the last is visited once, in its latest
    /// version, while commits go on. A stream without a table (never written, or deleted
    /// meanwhile) has no rows. When `registered`, nor has one without a registry entry in the
    /// statement's snapshot: a row read proves the stream exists.
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
    async fn page(
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
                    data: Json::from_checked_bytes(data.into_bytes().into()),
                }
            })
            .collect();
        Ok(RecordPage { records, next })
    }

    /// This store, its commits checked by `fence`.
    pub(crate) fn with_fence(&self, fence: crate::leases::Fence) -> PostgresStore {
        PostgresStore {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// A connection, the schema migrated.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client, Error> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        if self.migrated.get().is_none() {
            self.migrated
                .get_or_try_init(|| async { migrations::apply(&mut client).await.map(|_| ()) })
                .await?;
        }
        Ok(client)
    }

    /// The records table of `stream`, if it has one. Only `ensure` and `put_stream`, which
    /// create the table, remember it: a table named here may have been dropped with its stream.
    async fn table(&self, stream: &StreamName) -> Result<Option<Arc<str>>, Error> {
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
    async fn ensure(&self, stream: &StreamName, kind: Option<&str>) -> Result<Arc<str>, Error> {
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

    /// Makes the typed view `view` of `table` from `schema`, replacing one made from another
    /// schema; returns how many properties it left out. Replacing keeps the view's grants, but
    /// PostgreSQL replaces a view only when its columns stay in place: a property added before
    /// others or one removed means the view is dropped and made again, in the same transaction
    /// (a reader never sees it missing). A view of the user's own built on it stops that: the
    /// old view then stays, and the error says why. Processes sharing the database make it one
    /// at a time.
    async fn make_view(
        &self,
        table: &str,
        view: &str,
        schema: &weld_pipeline::source::Schema,
    ) -> Result<usize, Error> {
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

    /// The association link table of `stream` when its commits keep one: it exists, or it is
    /// made now because one of the `records` about to be written carries associations (looked
    /// for only while the table is not known to exist). Made outside the commit's transaction,
    /// so two commits making it at once do not abort each other.
    async fn links(
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

    /// Writes a batch in one transaction; what a commit acknowledges.
    ///
    /// The transaction touches the batch's own ledger row, its records' rows and, for a run's
    /// first batch, its run's row: commits of one stream in flight at once wait for each other
    /// only where they write the same record. Four round trips: `BEGIN`; the replica's lease
    /// checked (when fenced), the ledger looked up and the stored versions locked, pipelined;
    /// one statement writing the records, the ledger row and the run; `COMMIT`.
    async fn write(&self, batch: &Batch, table: &str) -> Result<Commit, Error> {
        let links = self.links(&batch.stream, table, &batch.records).await?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(database)?;
        let stream = batch.stream.as_str();
        let (run_id, seq) = (id_i64(batch.run_id.0)?, id_i64(batch.seq)?);
        let mut by_id: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for record in &batch.records {
            by_id.entry(record.id.as_str()).or_default().push(record);
        }
        let ids: Vec<&str> = by_id.keys().copied().collect();
        let amends = batch.records.iter().any(|r| r.amend);
        let key: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&stream, &run_id, &seq];
        let seen = async {
            let statement = prepared(
                &tx,
                "SELECT 1 FROM weld.batches WHERE stream = $1 AND run_id = $2 AND seq = $3",
            )
            .await
            .map_err(database)?;
            tx.query_opt(&statement, &key).await.map_err(database)
        };
        // A replica's lease is checked first, in the same pipeline: nothing is written (the
        // transaction rolls back) unless it holds.
        let fenced = async {
            match &self.fence {
                Some(fence) => fence.check(&tx, &batch.stream, batch.lease).await,
                None => Ok(()),
            }
        };
        let (fenced, seen, stored) = tokio::join!(fenced, seen, heads(&tx, table, &ids, amends));
        fenced?;
        if seen?.is_some() {
            return Ok(Commit::Replayed);
        }
        let stored = stored?;
        let plan = Plan::of(&by_id, &stored);
        let run = encode_run(&RunRecord::started(batch.run_id, Timestamp::now()))?;
        let sql = format!(
            "WITH updated AS ({updated}), inserted AS ({inserted}),
             ledger AS (
                 INSERT INTO weld.batches (stream, run_id, seq, epoch, last, records, written,
                     repaired, live_delta, archived_delta, cursor, replica)
                 VALUES ($14, $13, $15, $16, $17, $18, $19, $20, $21, $22, $23, $25)
                 ON CONFLICT DO NOTHING RETURNING 1),
             run AS (
                 INSERT INTO weld.runs (stream, run_id, run) VALUES ($14, $13, $24::text::jsonb)
                 ON CONFLICT DO NOTHING RETURNING 1)
             SELECT (SELECT count(*) FROM ledger), (SELECT count(*) FROM run),
                    ARRAY(SELECT id FROM inserted)",
            updated = rows_sql(table, 1, 13, true),
            inserted = rows_sql(table, 7, 13, false),
        );
        let (u, i) = (Columns::of(&plan.updates), Columns::of(&plan.inserts));
        let (u_documents, i_documents) = (u.documents(), i.documents());
        let statement = prepared(&tx, &sql).await.map_err(database)?;
        let row = tx
            .query_one(
                &statement,
                &[
                    &u.ids,
                    &u.times,
                    &u.archived,
                    &u_documents,
                    &u.created,
                    &u.archived_at,
                    &i.ids,
                    &i.times,
                    &i.archived,
                    &i_documents,
                    &i.created,
                    &i.archived_at,
                    &run_id,
                    &stream,
                    &seq,
                    &id_i64(batch.epoch)?,
                    &batch.last,
                    &(batch.records.len() as i64),
                    &(plan.moved.written as i64),
                    &id_i64(batch.repaired)?,
                    &plan.moved.live,
                    &plan.moved.archived,
                    &batch.cursor.as_bytes(),
                    &run,
                    &self.fence.as_ref().map(crate::leases::Fence::replica),
                ],
            )
            .await
            .map_err(database)?;
        if row.get::<_, i64>(0) == 0 {
            // The same batch, delivered twice at once, committed first by the other delivery.
            return Ok(Commit::Replayed);
        }
        let inserted: Vec<String> = row.get(2);
        let mut moved = plan.moved;
        let raced: Vec<&str> = plan
            .inserts
            .iter()
            .map(|r| r.id.as_str())
            .filter(|id| !inserted.iter().any(|i| i == id))
            .collect();
        if !raced.is_empty() {
            // Inserted by another commit meanwhile: decided again against what it wrote.
            for id in &raced {
                let assumed = &plan.moves[id];
                moved.written -= assumed.written;
                moved.live -= assumed.live;
                moved.archived -= assumed.archived;
            }
            let again = heads(&tx, table, &raced, amends).await?;
            let mut updates = Vec::new();
            for id in &raced {
                let (version, real) = decide(again.get(*id).cloned(), &by_id[id]);
                moved.written += real.written;
                moved.live += real.live;
                moved.archived += real.archived;
                updates.extend(version);
            }
            let c = Columns::of(&updates);
            let c_documents = c.documents();
            tx.execute(
                &rows_sql(table, 1, 7, true),
                &[
                    &c.ids,
                    &c.times,
                    &c.archived,
                    &c_documents,
                    &c.created,
                    &c.archived_at,
                    &run_id,
                ],
            )
            .await
            .map_err(database)?;
            tx.execute(
                "UPDATE weld.batches SET written = $4, live_delta = $5, archived_delta = $6
                 WHERE stream = $1 AND run_id = $2 AND seq = $3",
                &[
                    &stream,
                    &run_id,
                    &seq,
                    &(moved.written as i64),
                    &moved.live,
                    &moved.archived,
                ],
            )
            .await
            .map_err(database)?;
        }
        if let Some(links) = &links {
            // The links of every record written, again from its stored document.
            let written: Vec<&str> = plan
                .updates
                .iter()
                .chain(&plan.inserts)
                .map(|r| r.id.as_str())
                .collect();
            let (clear, fill) = (
                associations::clear_sql(links),
                associations::fill_sql(links, table),
            );
            // One after the other: pipelined, the fill could run first (a join polls its
            // futures in turn, not in order) and the clear would then remove what it wrote.
            tx.execute(&clear, &[&written]).await.map_err(database)?;
            tx.execute(&fill, &[&written]).await.map_err(database)?;
        }
        if row.get::<_, i64>(1) == 1 {
            abandon_older(&tx, stream, batch.run_id, Timestamp::now()).await?;
        }
        if batch.seq == 0 {
            // Once per run: the ledger of the runs it supersedes is folded.
            fold_older(&tx, stream, run_id).await?;
        }
        if (seq + 1) % SUM_EVERY == 0 {
            sum_committed(&tx, stream, run_id).await?;
        }
        tx.commit().await.map_err(database)?;
        Ok(Commit::Stored {
            records: moved.written,
        })
    }
}

/// Creates a records table if it is missing.
async fn create_table(client: &tokio_postgres::Client, table: &str) -> Result<(), Error> {
    create_table_with(client, &tables::create(table)?).await
}

/// Runs `statements` that create a table if it is missing, in order, each alone. Two processes
/// creating one at once race on the catalog: the loser's schema, table or index is the
/// winner's, and it goes on to the next statement.
async fn create_table_with(
    client: &tokio_postgres::Client,
    statements: &[String],
) -> Result<(), Error> {
    for statement in statements {
        match client.execute(statement.as_str(), &[]).await {
            Ok(_) => {}
            Err(e) if matches!(e.code().map(|c| c.code()), Some("23505" | "42P07")) => {}
            Err(e) => return Err(database(e)),
        }
    }
    Ok(())
}

fn id_i64(value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::Bug(format!("{value} does not fit a bigint")))
}

/// What a batch wrote: records, and how the live and archived counts moved.
#[derive(Debug, Default)]
struct Moved {
    written: u64,
    live: i64,
    archived: i64,
}

/// The stored head of a record (and its document, when an amendment needs it).
#[derive(Clone)]
struct Stored {
    updated_at: Timestamp,
    archived: bool,
    data: Option<Json>,
}

/// What the versions of one id in a batch (in batch order) do against the stored one: the
/// version to write, if any wins, and how the counts move.
fn decide(stored: Option<Stored>, versions: &[&Record]) -> (Option<Record>, Moved) {
    let mut moved = Moved::default();
    let mut head = stored;
    let mut written: Option<Record> = None;
    for record in versions {
        let held = head.as_ref().map(|h| (h.updated_at, h.archived));
        let Some((live, archived)) = upsert_counts(held, record) else {
            continue;
        };
        moved.live += live;
        moved.archived += archived;
        let version = match (&head, record.amend) {
            (
                Some(Stored {
                    updated_at,
                    archived,
                    data: Some(data),
                }),
                true,
            ) => Record {
                id: record.id.clone(),
                updated_at: *updated_at,
                archived: *archived,
                amend: false,
                data: data.clone(),
            }
            .amended_by(record),
            _ => Record {
                amend: false,
                ..(*record).clone()
            },
        };
        head = Some(Stored {
            updated_at: version.updated_at,
            archived: version.archived,
            data: Some(version.data.clone()),
        });
        moved.written += 1;
        written = Some(version);
    }
    (written, moved)
}

/// How many statements one connection keeps prepared: each records table has a few of its own,
/// so a house of many streams would grow the cache without end; past this it starts over.
const CACHED_STATEMENTS: usize = 200;

/// `sql`, prepared once per connection and kept in its `cache` (bounded by
/// [`CACHED_STATEMENTS`]): the hot statements skip a round trip and the server's parsing and
/// planning on every call after the first.
pub(crate) async fn prepared(
    client: &impl Cached,
    sql: &str,
) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    let cache = client.cache();
    if cache.size() >= CACHED_STATEMENTS {
        cache.clear();
    }
    client.prepare_cached(sql).await
}

/// A pooled connection, or a transaction on one, with its connection's statement cache.
pub(crate) trait Cached: deadpool_postgres::GenericClient {
    fn cache(&self) -> &deadpool_postgres::StatementCache;
}

impl Cached for deadpool_postgres::Client {
    fn cache(&self) -> &deadpool_postgres::StatementCache {
        &self.statement_cache
    }
}

impl Cached for deadpool_postgres::Transaction<'_> {
    fn cache(&self) -> &deadpool_postgres::StatementCache {
        &self.statement_cache
    }
}

/// The stored heads of `ids`, locked until the transaction ends.
async fn heads(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    ids: &[&str],
    documents: bool,
) -> Result<HashMap<String, Stored>, Error> {
    let document = if documents {
        "data::text"
    } else {
        "NULL::text"
    };
    let sql = format!(
        "SELECT id, updated_at, archived, {document} FROM {table} WHERE id = ANY($1)
         ORDER BY id FOR UPDATE"
    );
    let statement = prepared(tx, &sql).await.map_err(database)?;
    let rows = tx.query(&statement, &[&ids]).await.map_err(database)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let data: Option<String> = row.get(3);
            (
                row.get(0),
                Stored {
                    updated_at: Millis::of(&row, 1),
                    archived: row.get(2),
                    data: data.map(|d| Json::from_checked_bytes(d.into_bytes().into())),
                },
            )
        })
        .collect())
}

/// What a batch writes against the stored versions: the rows to update (they exist, locked),
/// the rows to insert, and how the counts move, in all and per id.
struct Plan<'a> {
    updates: Vec<Record>,
    inserts: Vec<Record>,
    moved: Moved,
    moves: HashMap<&'a str, Moved>,
}

impl<'a> Plan<'a> {
    fn of(by_id: &BTreeMap<&'a str, Vec<&Record>>, stored: &HashMap<String, Stored>) -> Self {
        let mut plan = Plan {
            updates: Vec::new(),
            inserts: Vec::new(),
            moved: Moved::default(),
            moves: HashMap::new(),
        };
        for (id, versions) in by_id {
            let head = stored.get(*id).cloned();
            let exists = head.is_some();
            let (version, moved) = decide(head, versions);
            let Some(version) = version else { continue };
            if exists {
                plan.updates.push(version);
            } else {
                plan.inserts.push(version);
            }
            plan.moved.written += moved.written;
            plan.moved.live += moved.live;
            plan.moved.archived += moved.archived;
            plan.moves.insert(*id, moved);
        }
        plan
    }
}

/// Rows as the parallel arrays `unnest` takes.
struct Columns<'a> {
    ids: Vec<&'a str>,
    times: Vec<i64>,
    archived: Vec<bool>,
    documents: Vec<std::borrow::Cow<'a, str>>,
    created: Vec<Option<i64>>,
    archived_at: Vec<Option<i64>>,
}

/// The times a HubSpot-shaped document carries besides its version: `createdAt`, `archivedAt`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Times<'a> {
    #[serde(default, borrow)]
    created_at: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    archived_at: Option<std::borrow::Cow<'a, str>>,
}

/// A time column's value: the text as RFC 3339 in milliseconds, or none for text that is not.
fn millis(text: Option<&str>) -> Option<i64> {
    text.and_then(|t| Timestamp::parse_rfc3339(t).ok())
        .map(Timestamp::as_millis)
}

impl<'a> Columns<'a> {
    fn of(records: &'a [Record]) -> Self {
        let (mut created, mut archived_at) = (Vec::new(), Vec::new());
        for record in records {
            // Read here rather than cast in SQL: one bad value must not fail a commit, and a
            // safe cast in SQL costs a subtransaction per row.
            let times: Option<Times<'_>> = serde_json::from_slice(record.data.as_bytes()).ok();
            created.push(millis(times.as_ref().and_then(|t| t.created_at.as_deref())));
            archived_at.push(millis(
                times.as_ref().and_then(|t| t.archived_at.as_deref()),
            ));
        }
        Columns {
            ids: records.iter().map(|r| r.id.as_str()).collect(),
            times: records.iter().map(|r| r.updated_at.as_millis()).collect(),
            archived: records.iter().map(|r| r.archived).collect(),
            documents: records
                .iter()
                .map(|r| without_nul(std::str::from_utf8(r.data.as_bytes()).unwrap_or("null")))
                .collect(),
            created,
            archived_at,
        }
    }

    /// The documents as the `text[]` parameter takes them.
    fn documents(&self) -> Vec<&str> {
        self.documents.iter().map(|d| d.as_ref()).collect()
    }
}

/// The JSON text with every NUL in a string (`\u0000`, the only way valid JSON holds one)
/// written as U+FFFD: `jsonb` cannot hold a NUL and refuses the whole document, which would
/// refuse the commit for good. The rest of the document is kept byte for byte.
fn without_nul(json: &str) -> std::borrow::Cow<'_, str> {
    if !json.contains("\\u0000") {
        return std::borrow::Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        if let Some(after) = escape.strip_prefix("\\u0000") {
            out.push_str("\\ufffd");
            rest = after;
        } else {
            // A backslash and the ASCII character it escapes, copied as they are.
            let len = escape.len().min(2);
            out.push_str(&escape[..len]);
            rest = &escape[len..];
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// The statement writing rows from the arrays at parameters `$first..$first+5` (ids, times,
/// archived flags, documents, creation and archive times), the run id at `$run`: an update of rows that exist (locked by
/// this transaction), or an insert that skips rows another commit inserted meanwhile. It returns
/// the ids it wrote.
fn rows_sql(table: &str, first: usize, run: usize, update: bool) -> String {
    let conflict = if update {
        "DO UPDATE SET
             updated_at = EXCLUDED.updated_at, archived = EXCLUDED.archived,
             data = EXCLUDED.data, properties = EXCLUDED.properties,
             created_at = EXCLUDED.created_at, archived_at = EXCLUDED.archived_at,
             _weld_run_id = EXCLUDED._weld_run_id, _weld_synced_at = EXCLUDED._weld_synced_at"
    } else {
        "DO NOTHING"
    };
    let (a, b, c, d) = (first, first + 1, first + 2, first + 3);
    let (e, f) = (first + 4, first + 5);
    format!(
        "INSERT INTO {table} AS t
             (id, updated_at, archived, data, properties, created_at, archived_at,
              _weld_run_id, _weld_synced_at)
         SELECT u.id, to_timestamp(0) + u.ms * interval '1 millisecond', u.archived, u.data,
                u.properties, to_timestamp(0) + u.created * interval '1 millisecond',
                to_timestamp(0) + u.gone * interval '1 millisecond', ${run}::bigint, now()
         FROM (SELECT id, ms, archived, data::json AS data,
                      data::jsonb -> 'properties' AS properties, created, gone
               FROM unnest(${a}::text[], ${b}::bigint[], ${c}::bool[], ${d}::text[],
                           ${e}::bigint[], ${f}::bigint[])
                    AS x(id, ms, archived, data, created, gone)) AS u
         ON CONFLICT (id) {conflict}
         RETURNING id"
    )
}

fn decode_run(value: &str) -> Result<RunRecord, Error> {
    serde_json::from_str(value)
        .map_err(|e| Error::Bug(format!("a stored run does not decode: {e}")))
}

fn encode_run(run: &RunRecord) -> Result<String, Error> {
    serde_json::to_string(run).map_err(|e| Error::Bug(format!("a run does not encode: {e}")))
}

async fn load_run(
    tx: &Transaction<'_>,
    stream: &str,
    run_id: i64,
) -> Result<Option<RunRecord>, Error> {
    let row = tx
        .query_opt(
            "SELECT run::text FROM weld.runs WHERE stream = $1 AND run_id = $2 FOR UPDATE",
            &[&stream, &run_id],
        )
        .await
        .map_err(database)?;
    row.map(|row| decode_run(row.get(0))).transpose()
}

async fn save_run(tx: &Transaction<'_>, stream: &str, run: &RunRecord) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO weld.runs (stream, run_id, run) VALUES ($1, $2, $3::text::jsonb)
         ON CONFLICT (stream, run_id) DO UPDATE SET run = EXCLUDED.run",
        &[&stream, &id_i64(run.id.0)?, &encode_run(run)?],
    )
    .await
    .map_err(database)?;
    Ok(())
}

/// Records a run that started at `at`, unless it is known, closing the older runs of the
/// stream still marked running.
async fn open_run(
    tx: &Transaction<'_>,
    stream: &str,
    run_id: RunId,
    at: Timestamp,
) -> Result<(), Error> {
    let run = RunRecord::started(run_id, at);
    let new = tx
        .execute(
            "INSERT INTO weld.runs (stream, run_id, run) VALUES ($1, $2, $3::text::jsonb)
             ON CONFLICT DO NOTHING",
            &[&stream, &id_i64(run_id.0)?, &encode_run(&run)?],
        )
        .await
        .map_err(database)?;
    if new == 1 {
        abandon_older(tx, stream, run_id, at).await?;
    }
    Ok(())
}

/// How long a superseded run's ledger rows stay as they are before they are folded: long past
/// any redelivery of its batches (a worker starts a run only once its outbox has drained, so
/// once a newer run has begun, no batch of an older one is still on its way from that worker).
const FOLD_AFTER_SECS: f64 = 3_600.0;

/// Folds the ledger rows of the stream's runs older than `run_id` whose last batch committed
/// more than [`FOLD_AFTER_SECS`] ago: their count deltas are added to `weld.totals`, their
/// run's figures (its summed ones with those of its rows past them) to its `weld.runs` row, and
/// the rows are deleted. The checkpoint never reads them (it is the newest run's), and counts
/// and the run history read the folded figures with the rows that remain. A batch of a folded
/// run delivered again would be written again, harmlessly: its records are no newer than what
/// is stored.
async fn fold_older(tx: &Transaction<'_>, stream: &str, run_id: i64) -> Result<(), Error> {
    // The runs' rows locked first, as `sum_committed` does: the fold then reads them, and their
    // ledger, after any summing of them committed, and no row is counted twice. Newest first,
    // the order `abandon_older` locks them in, so the two never wait for each other in a cycle.
    let due: Vec<i64> = tx
        .query(
            "SELECT run_id FROM weld.runs WHERE stream = $1 AND run_id IN (
                 SELECT run_id FROM weld.batches WHERE stream = $1 AND run_id < $2
                 GROUP BY run_id
                 HAVING max(committed_at) < now() - make_interval(secs => $3))
             ORDER BY run_id DESC FOR UPDATE",
            &[&stream, &run_id, &FOLD_AFTER_SECS],
        )
        .await
        .map_err(database)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    tx.execute(
        "WITH old AS (
             DELETE FROM weld.batches b WHERE b.stream = $1 AND b.run_id = ANY($2)
             RETURNING b.run_id, b.seq, b.last, b.records, b.repaired, b.live_delta,
                       b.archived_delta, b.committed_at
         ), unsummed AS (
             SELECT o.run_id, count(*) AS batches, sum(o.records)::bigint AS records,
                    sum(o.repaired)::bigint AS repaired, max(o.seq) AS top,
                    max(o.seq) FILTER (WHERE o.last) AS last_seq, max(o.committed_at) AS done_at,
                    sum(o.live_delta)::bigint AS live, sum(o.archived_delta)::bigint AS archived
             FROM old o JOIN weld.runs r ON r.stream = $1 AND r.run_id = o.run_id
             WHERE o.seq > coalesce(r.summed_seq, -1)
             GROUP BY o.run_id
         ), per_run AS (
             SELECT r.run_id,
                    coalesce(u.batches, 0) + coalesce(r.summed_seq + 1, 0) AS batches,
                    coalesce(u.records, 0) + coalesce(r.summed_records, 0) AS records,
                    coalesce(u.repaired, 0) + coalesce(r.summed_repaired, 0) AS repaired,
                    greatest(u.top, r.summed_seq) AS top,
                    coalesce(u.last_seq, r.summed_last_seq) AS last_seq,
                    greatest(u.done_at, r.summed_done_at) AS done_at,
                    coalesce(u.live, 0) + coalesce(r.summed_live, 0) AS live,
                    coalesce(u.archived, 0) + coalesce(r.summed_archived, 0) AS archived
             FROM weld.runs r LEFT JOIN unsummed u ON u.run_id = r.run_id
             WHERE r.stream = $1 AND r.run_id = ANY($2)
         ), folded AS (
             UPDATE weld.runs r SET
                 folded_batches = coalesce(r.folded_batches, 0) + p.batches,
                 folded_records = coalesce(r.folded_records, 0) + p.records,
                 folded_repaired = coalesce(r.folded_repaired, 0) + p.repaired,
                 folded_top = greatest(r.folded_top, p.top),
                 folded_last_seq = coalesce(p.last_seq, r.folded_last_seq),
                 folded_done_at = greatest(r.folded_done_at, p.done_at),
                 summed_seq = NULL, summed_records = NULL, summed_repaired = NULL,
                 summed_live = NULL, summed_archived = NULL, summed_last_seq = NULL,
                 summed_done_at = NULL
             FROM per_run p WHERE r.stream = $1 AND r.run_id = p.run_id
         )
         INSERT INTO weld.totals (stream, live, archived)
         SELECT $1, coalesce(sum(live), 0), coalesce(sum(archived), 0) FROM per_run
         HAVING count(*) > 0
         ON CONFLICT (stream) DO UPDATE SET live = weld.totals.live + EXCLUDED.live,
             archived = weld.totals.archived + EXCLUDED.archived",
        &[&stream, &due],
    )
    .await
    .map_err(database)?;
    Ok(())
}

/// Every this many batches of a run (at `seq`s 63, 127, ...), the commit sums the run's
/// committed ledger rows into its `weld.runs` row ([`sum_committed`]): a status then sums at
/// most about as many rows, plus those in flight, whatever the run's size.
const SUM_EVERY: i64 = 64;

/// Adds to the run's summed figures its ledger rows past `summed_seq` up to the first gap (a
/// batch not committed yet), and moves `summed_seq` to the last of them. Rows once committed
/// never change until they are folded or the stream deleted, so the sums stay true.
async fn sum_committed(tx: &Transaction<'_>, stream: &str, run_id: i64) -> Result<(), Error> {
    // The run's row locked first: the rows are then read in a snapshot taken after any other
    // summing or folding of the run committed, so none is summed twice.
    let Some(row) = tx
        .query_opt(
            "SELECT summed_seq FROM weld.runs WHERE stream = $1 AND run_id = $2 FOR UPDATE",
            &[&stream, &run_id],
        )
        .await
        .map_err(database)?
    else {
        return Ok(());
    };
    let from: i64 = row.get::<_, Option<i64>>(0).unwrap_or(-1);
    // The k-th row past `from` continues the run of contiguous seqs exactly when seq = from + k.
    tx.execute(
        "WITH next AS (
             SELECT seq, records, repaired, live_delta, archived_delta, last, committed_at,
                    seq - row_number() OVER (ORDER BY seq) AS shift
             FROM weld.batches WHERE stream = $1 AND run_id = $2 AND seq > $3
         ), prefix AS (
             SELECT count(*) AS n, max(seq) AS top, sum(records)::bigint AS records,
                    sum(repaired)::bigint AS repaired, sum(live_delta)::bigint AS live,
                    sum(archived_delta)::bigint AS archived,
                    max(seq) FILTER (WHERE last) AS last_seq, max(committed_at) AS done_at
             FROM next WHERE shift = $3
         )
         UPDATE weld.runs r SET
             summed_seq = p.top,
             summed_records = coalesce(r.summed_records, 0) + p.records,
             summed_repaired = coalesce(r.summed_repaired, 0) + p.repaired,
             summed_live = coalesce(r.summed_live, 0) + p.live,
             summed_archived = coalesce(r.summed_archived, 0) + p.archived,
             summed_last_seq = coalesce(p.last_seq, r.summed_last_seq),
             summed_done_at = greatest(r.summed_done_at, p.done_at)
         FROM prefix p WHERE r.stream = $1 AND r.run_id = $2 AND p.n > 0",
        &[&stream, &run_id, &from],
    )
    .await
    .map_err(database)?;
    Ok(())
}

/// Closes the runs of the stream older than `run_id` still marked running: a newer run started.
async fn abandon_older(
    tx: &Transaction<'_>,
    stream: &str,
    run_id: RunId,
    at: Timestamp,
) -> Result<(), Error> {
    let older = tx
        .query(
            "SELECT run::text FROM weld.runs
             WHERE stream = $1 AND run_id < $2 AND run ->> 'state' = 'running'
             ORDER BY run_id DESC LIMIT 8 FOR UPDATE",
            &[&stream, &id_i64(run_id.0)?],
        )
        .await
        .map_err(database)?;
    for row in older {
        let mut older = decode_run(row.get(0))?;
        if older.abandon(at) {
            save_run(tx, stream, &older).await?;
        }
    }
    Ok(())
}

/// The checkpoint the ledger of `stream` holds at `epoch`: the cursor of the last batch of the
/// newest run that has committed its first batch, up to which every batch of that run is
/// committed. Batches of older epochs do not count.
async fn checkpoint_at(
    client: &tokio_postgres::Client,
    stream: &str,
    epoch: i64,
) -> Result<Checkpoint, Error> {
    let row = client
        .query_opt(
            "SELECT b.cursor FROM weld.batches b
             WHERE b.stream = $1 AND b.epoch >= $2
               AND b.run_id = (SELECT max(run_id) FROM weld.batches
                               WHERE stream = $1 AND epoch >= $2 AND seq = 0)
               AND NOT EXISTS (SELECT 1 FROM weld.batches n
                               WHERE n.stream = b.stream AND n.run_id = b.run_id
                                 AND n.seq = b.seq + 1 AND n.epoch >= $2)
             ORDER BY b.seq LIMIT 1",
            &[&stream, &epoch],
        )
        .await
        .map_err(database)?;
    Ok(row.map_or_else(Checkpoint::start, |row| {
        Checkpoint::from_bytes(row.get::<_, Vec<u8>>(0))
    }))
}

#[async_trait]
impl Sink for PostgresStore {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
        let _turn = self
            .commits
            .acquire()
            .await
            .map_err(|_| Error::Bug("the store's commit semaphore is closed".into()))?;
        let table = self.ensure(&batch.stream, None).await?;
        self.write(batch, &table).await
    }

    async fn checkpoint(&self, stream: &StreamName) -> Result<Checkpoint, Error> {
        Ok(self.resume(stream).await?.checkpoint)
    }
}

#[async_trait]
impl StreamStore for PostgresStore {
    async fn stream(&self, name: &StreamName) -> Result<Option<StreamEntry>, Error> {
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

    async fn streams(&self) -> Result<Vec<StreamEntry>, Error> {
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

    async fn put_stream(&self, entry: &StreamEntry) -> Result<(), Error> {
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
        crate::registry::announce(&**client, &entry.name).await
    }

    async fn delete_stream(&self, name: &StreamName) -> Result<(), Error> {
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
        crate::registry::announce(&*tx, name).await?;
        tx.commit().await.map_err(database)?;
        self.tables.locked().remove(name);
        self.links.locked().remove(name);
        self.views.locked().remove(name);
        Ok(())
    }

    async fn describe(
        &self,
        stream: &StreamName,
        schema: &weld_pipeline::source::Schema,
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

    async fn resume(&self, stream: &StreamName) -> Result<Resume, Error> {
        let client = self.client().await?;
        let epoch: i64 = client
            .query_opt(
                "SELECT epoch FROM weld.streams WHERE name = $1",
                &[&stream.as_str()],
            )
            .await
            .map_err(database)?
            .map_or(0, |row| row.get(0));
        Ok(Resume {
            epoch: epoch as u64,
            checkpoint: checkpoint_at(&client, stream.as_str(), epoch).await?,
        })
    }

    async fn resync(&self, stream: &StreamName) -> Result<u64, Error> {
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
        crate::registry::announce(&**client, stream).await?;
        Ok(epoch as u64)
    }

    async fn counts(&self, stream: &StreamName) -> Result<Counts, Error> {
        let row = self
            .client()
            .await?
            .query_one(
                // The runs with ledger rows (every row has its run's row, written with it):
                // each one's summed deltas and those of its rows past them, and the totals of
                // the rows folded.
                "SELECT coalesce(sum(coalesce(r.summed_live, 0) + coalesce(a.live, 0)), 0)::bigint
                            + coalesce((SELECT live FROM weld.totals WHERE stream = $1), 0),
                        coalesce(sum(coalesce(r.summed_archived, 0) + coalesce(a.archived, 0)),
                                 0)::bigint
                            + coalesce((SELECT archived FROM weld.totals WHERE stream = $1), 0)
                 FROM weld.runs r
                 LEFT JOIN LATERAL (
                     SELECT sum(live_delta) AS live, sum(archived_delta) AS archived
                     FROM weld.batches b
                     WHERE b.stream = r.stream AND b.run_id = r.run_id
                       AND b.seq > coalesce(r.summed_seq, -1)
                 ) a ON true
                 WHERE r.stream = $1
                   AND r.run_id >= (SELECT min(run_id) FROM weld.batches WHERE stream = $1)",
                &[&stream.as_str()],
            )
            .await
            .map_err(database)?;
        Ok(Counts {
            live: row.get::<_, i64>(0).max(0) as u64,
            archived: row.get::<_, i64>(1).max(0) as u64,
        })
    }

    async fn records(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<RecordPage, Error> {
        self.page(stream, after, limit, archived, false).await
    }

    async fn existing_records(
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
            Ok(page) => Ok(self.stream(stream).await?.map(|_| page)),
            Err(error @ Error::Invalid(_)) => match self.stream(stream).await? {
                Some(_) => Err(error),
                None => Ok(None),
            },
            Err(error) => Err(error),
        }
    }

    /// Ids, versions and archived flags only, in key order: the reconciliation's inventory
    /// reads no document.
    async fn held(
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

    async fn runs(&self, stream: &StreamName, limit: usize) -> Result<Vec<RunRecord>, Error> {
        // Each run as recorded, with what its committed batches say of it.
        let rows = self
            .client()
            .await?
            .query(
                "SELECT r.run::text,
                        a.batches + coalesce(r.summed_seq + 1, 0) + coalesce(r.folded_batches, 0),
                        a.records + coalesce(r.summed_records, 0) + coalesce(r.folded_records, 0),
                        a.repaired + coalesce(r.summed_repaired, 0)
                            + coalesce(r.folded_repaired, 0),
                        greatest(a.top, r.summed_seq, r.folded_top),
                        coalesce(a.last_seq, r.summed_last_seq, r.folded_last_seq),
                        (extract(epoch FROM greatest(a.done_at, r.summed_done_at,
                                                     r.folded_done_at)) * 1000)::bigint
                 FROM weld.runs r
                 LEFT JOIN LATERAL (
                     SELECT count(*) AS batches, coalesce(sum(records), 0)::bigint AS records,
                            coalesce(sum(repaired), 0)::bigint AS repaired, max(seq) AS top,
                            max(seq) FILTER (WHERE last) AS last_seq, max(committed_at) AS done_at
                     FROM weld.batches b
                     WHERE b.stream = r.stream AND b.run_id = r.run_id
                       AND b.seq > coalesce(r.summed_seq, -1)
                 ) a ON true
                 WHERE r.stream = $1 ORDER BY r.run_id DESC LIMIT $2",
                &[&stream.as_str(), &(limit as i64)],
            )
            .await
            .map_err(database)?;
        rows.into_iter()
            .map(|row| {
                let mut run = decode_run(row.get(0))?;
                let batches: i64 = row.get(1);
                run.batches = batches as u64;
                run.records = row.get::<_, i64>(2) as u64;
                run.repaired = row.get::<_, i64>(3) as u64;
                let top: Option<i64> = row.get(4);
                let last_seq: Option<i64> = row.get(5);
                // Seqs are unique and from 0: as many batches as the highest seq + 1 is no gap.
                let contiguous = top.filter(|top| batches == top + 1);
                run.progress.contiguous = contiguous.map(|c| c as u64);
                run.progress.last_seq = last_seq.map(|l| l as u64);
                if run.progress.is_complete() {
                    run.state = RunState::Succeeded;
                    run.error = None;
                    run.finished_at = row.get::<_, Option<i64>>(6).map(Timestamp::from_millis);
                }
                Ok(run)
            })
            .collect()
    }

    async fn start_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        at: Timestamp,
    ) -> Result<(), Error> {
        self.ensure(stream, None).await?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(database)?;
        open_run(&tx, stream.as_str(), run_id, at).await?;
        tx.commit().await.map_err(database)
    }

    async fn finish_run(
        &self,
        stream: &StreamName,
        run_id: RunId,
        outcome: &RunOutcome,
    ) -> Result<(), Error> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(database)?;
        let name = stream.as_str();
        let mut run = load_run(&tx, name, id_i64(run_id.0)?)
            .await?
            .unwrap_or_else(|| RunRecord::started(run_id, Timestamp::now()));
        if run.finish(outcome, Timestamp::now()) {
            save_run(&tx, name, &run).await?;
        }
        tx.commit().await.map_err(database)
    }

    /// Every commit is durable when it returns: nothing to wait for.
    async fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn probe(&self) -> Result<(), Error> {
        self.client()
            .await?
            .execute(
                "INSERT INTO weld.probe (id, at) VALUES (1, now())
                 ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
                &[],
            )
            .await
            .map_err(database)?;
        Ok(())
    }
}

fn decode_entry(value: &str) -> Result<StreamEntry, Error> {
    serde_json::from_str(value)
        .map_err(|e| Error::Bug(format!("a registry entry does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::{without_nul, Millis};
    use tokio_postgres::types::{FromSql, Type};

    #[test]
    fn a_timestamptz_reads_as_unix_milliseconds_flooring_its_microseconds() {
        let millis = |micros: i64| {
            Millis::from_sql(&Type::TIMESTAMPTZ, &micros.to_be_bytes())
                .unwrap()
                .0
        };
        // 2000-01-01T00:00:00Z, PostgreSQL's epoch; the Unix epoch; a time before both.
        assert_eq!(millis(0), 946_684_800_000);
        assert_eq!(millis(-946_684_800_000_000), 0);
        assert_eq!(millis(-946_684_800_000_001), -1);
        assert_eq!(millis(1_234_567), 946_684_801_234);
        assert!(Millis::from_sql(&Type::TIMESTAMPTZ, &[0; 4]).is_err());
        assert!(<Millis as FromSql>::accepts(&Type::TIMESTAMPTZ));
        assert!(!<Millis as FromSql>::accepts(&Type::INT8));
    }

    #[test]
    fn a_nul_in_a_string_becomes_u_fffd_and_nothing_else_changes() {
        for (before, after) in [
            (r#"{"a":"x"}"#, r#"{"a":"x"}"#),
            (r#"{"a":"x\u0000y"}"#, r#"{"a":"x\ufffdy"}"#),
            // An escaped backslash followed by u0000 is text, not a NUL.
            (r#"{"a":"x\\u0000"}"#, r#"{"a":"x\\u0000"}"#),
            (r#"{"\u0000":"\"\u0000é"}"#, r#"{"\ufffd":"\"\ufffdé"}"#),
        ] {
            assert_eq!(without_nul(before), after, "{before}");
        }
    }
}
