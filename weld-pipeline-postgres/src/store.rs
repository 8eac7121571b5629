//! The store: [`StreamStore`] on PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Transaction};
use weld_pipeline::store::{
    decode_token, encode_token, Archived, Counts, RecordPage, Resume, RunRecord, RunState,
    StreamEntry, StreamStore,
};
use weld_pipeline::{
    Batch, Checkpoint, Commit, Error, Json, Record, RunId, RunOutcome, Sink, StreamName, Timestamp,
};

use crate::error::{database, pool as pool_error};
use crate::{migrations, tables, PostgresConfig};

/// A stored time as milliseconds since the epoch, exactly.
const MS: &str = "(extract(epoch FROM updated_at) * 1000)::bigint";

/// The store of a controller, on PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Each stream's records table, as `weld.streams` names it, once known.
    tables: Arc<Mutex<HashMap<StreamName, Arc<str>>>>,
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
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| Error::Invalid(format!("the PostgreSQL URL does not parse: {e}")))?;
        pg.options(format!(
            "-c statement_timeout={}",
            config.statement_timeout.as_millis()
        ));
        pg.connect_timeout(config.connect_timeout);
        pg.application_name("weld-pipeline");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| Error::Bug(format!("the PostgreSQL pool cannot be built: {e}")))?;
        let store = PostgresStore {
            pool,
            tables: Arc::default(),
        };
        let mut client = store.pool.get().await.map_err(pool_error)?;
        migrations::apply(&mut client).await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, Error> {
        self.pool.get().await.map_err(pool_error)
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
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.get(stream).cloned()
    }

    fn remember(&self, stream: &StreamName, table: String) -> Arc<str> {
        let table: Arc<str> = table.into();
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
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
                    &tables::records_table(stream, kind).as_str(),
                ],
            )
            .await
            .map_err(database)?
            .get(0);
        create_table(&client, &table).await?;
        Ok(self.remember(stream, table))
    }

    /// Writes a batch in one transaction; what a commit acknowledges.
    async fn write(&self, batch: &Batch, table: &str) -> Result<Commit, Error> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(database)?;
        let stream = batch.stream.as_str();
        // The stream's row, locked: its commits one at a time, as the contiguity rule needs.
        let epoch: i64 = tx
            .query_one(
                "SELECT epoch FROM weld.streams WHERE name = $1 FOR UPDATE",
                &[&stream],
            )
            .await
            .map_err(database)?
            .get(0);
        let (run_id, seq) = (id_i64(batch.run_id.0)?, id_i64(batch.seq)?);
        let replay = tx
            .query_opt(
                "SELECT 1 FROM weld.batches WHERE stream = $1 AND run_id = $2 AND seq = $3",
                &[&stream, &run_id, &seq],
            )
            .await
            .map_err(database)?;
        if replay.is_some() {
            return Ok(Commit::Replayed);
        }
        let plan = plan(&tx, table, batch).await?;
        write_versions(&tx, table, &plan.versions, run_id).await?;

        let now = Timestamp::now();
        let mut run = match load_run(&tx, stream, run_id).await? {
            Some(run) => run,
            None => open_run(&tx, stream, batch.run_id, now).await?,
        };
        run.records += batch.records.len() as u64;
        run.batches += 1;
        run.repaired += batch.repaired;
        let after = run.progress.contiguous.map_or(-1, |c| c as i64);
        let early: HashMap<u64, Vec<u8>> = tx
            .query(
                "SELECT seq, cursor FROM weld.batches WHERE stream = $1 AND run_id = $2 AND seq > $3",
                &[&stream, &run_id, &after],
            )
            .await
            .map_err(database)?
            .into_iter()
            .map(|row| (row.get::<_, i64>(0) as u64, row.get::<_, Vec<u8>>(1)))
            .collect();
        let moved = run.progress.commit(
            batch.seq,
            batch.last,
            batch.cursor.as_bytes().to_vec(),
            |s| Ok(early.get(&s).cloned()),
        )?;
        if run.progress.is_complete() {
            run.state = RunState::Succeeded;
            run.finished_at = Some(now);
            run.error = None;
        }
        save_run(&tx, stream, &run).await?;
        tx.execute(
            "INSERT INTO weld.batches (stream, run_id, seq, records, cursor) VALUES ($1, $2, $3, $4, $5)",
            &[&stream, &run_id, &seq, &(plan.written as i64), &batch.cursor.as_bytes()],
        )
        .await
        .map_err(database)?;
        // A batch fetched before the stream's latest resync keeps its records, not its cursor.
        let checkpoint = moved.filter(|_| (batch.epoch as i64) >= epoch);
        tx.execute(
            "UPDATE weld.streams SET live = live + $2, archived = archived + $3,
                 checkpoint = coalesce($4, checkpoint)
             WHERE name = $1",
            &[&stream, &plan.live, &plan.archived, &checkpoint],
        )
        .await
        .map_err(database)?;
        tx.commit().await.map_err(database)?;
        Ok(Commit::Stored {
            records: plan.written,
        })
    }
}

/// Creates a records table if it is missing. Two processes creating one at once race on the
/// catalog: the loser's table is the winner's.
async fn create_table(client: &tokio_postgres::Client, table: &str) -> Result<(), Error> {
    match client.batch_execute(&tables::create(table)).await {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.code().map(|c| c.code()), Some("23505" | "42P07")) => Ok(()),
        Err(e) => Err(database(e)),
    }
}

fn id_i64(value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::Bug(format!("{value} does not fit a bigint")))
}

/// What a batch writes: one version per id (the last that wins), and how the counts move.
struct Plan {
    versions: BTreeMap<String, Record>,
    written: u64,
    live: i64,
    archived: i64,
}

/// The stored head of a record (and its document, when an amendment needs it).
struct Stored {
    updated_at: Timestamp,
    archived: bool,
    data: Option<Json>,
}

/// Decides, against the stored versions (locked), which records of the batch win, and how.
async fn plan(tx: &Transaction<'_>, table: &str, batch: &Batch) -> Result<Plan, Error> {
    let ids: Vec<&str> = batch.records.iter().map(|r| r.id.as_str()).collect();
    let amends = batch.records.iter().any(|r| r.amend);
    let document = if amends { "data::text" } else { "NULL::text" };
    let rows = tx
        .query(
            &format!(
                "SELECT id, {MS}, archived, {document} FROM {table} WHERE id = ANY($1) FOR UPDATE"
            ),
            &[&ids],
        )
        .await
        .map_err(database)?;
    let mut stored: HashMap<String, Stored> = rows
        .into_iter()
        .map(|row| {
            let data: Option<String> = row.get(3);
            (
                row.get(0),
                Stored {
                    updated_at: Timestamp::from_millis(row.get(1)),
                    archived: row.get(2),
                    data: data.map(|d| Json::from_checked_bytes(d.into_bytes().into())),
                },
            )
        })
        .collect();
    let mut plan = Plan {
        versions: BTreeMap::new(),
        written: 0,
        live: 0,
        archived: 0,
    };
    for record in &batch.records {
        // A version written earlier in this batch counts as stored.
        let before = plan.versions.get(&record.id).map(|v| Stored {
            updated_at: v.updated_at,
            archived: v.archived,
            data: Some(v.data.clone()),
        });
        let before = before.as_ref().or_else(|| stored.get(&record.id));
        match before {
            Some(head) if head.updated_at > record.updated_at => continue,
            Some(head) if head.archived => plan.archived -= 1,
            Some(_) => plan.live -= 1,
            None => {}
        }
        if record.archived {
            plan.archived += 1;
        } else {
            plan.live += 1;
        }
        let version = match (record.amend, before) {
            (
                true,
                Some(Stored {
                    updated_at,
                    archived,
                    data: Some(data),
                }),
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
                ..record.clone()
            },
        };
        stored.remove(&record.id);
        plan.versions.insert(record.id.clone(), version);
        plan.written += 1;
    }
    Ok(plan)
}

/// Upserts the winning versions in one statement.
async fn write_versions(
    tx: &Transaction<'_>,
    table: &str,
    versions: &BTreeMap<String, Record>,
    run_id: i64,
) -> Result<(), Error> {
    if versions.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = versions.keys().map(String::as_str).collect();
    let times: Vec<i64> = versions
        .values()
        .map(|r| r.updated_at.as_millis())
        .collect();
    let archived: Vec<bool> = versions.values().map(|r| r.archived).collect();
    let documents: Vec<&str> = versions
        .values()
        .map(|r| std::str::from_utf8(r.data.as_bytes()).unwrap_or("null"))
        .collect();
    let sql = format!(
        "INSERT INTO {table} AS t
             (id, updated_at, archived, data, properties, created_at, archived_at,
              _weld_run_id, _weld_synced_at)
         SELECT u.id, to_timestamp(0) + u.ms * interval '1 millisecond', u.archived, u.doc,
                u.doc -> 'properties', weld.to_timestamptz(u.doc ->> 'createdAt'),
                weld.to_timestamptz(u.doc ->> 'archivedAt'), $5, now()
         FROM (SELECT id, ms, archived, data::jsonb AS doc
               FROM unnest($1::text[], $2::bigint[], $3::bool[], $4::text[])
                    AS x(id, ms, archived, data)) AS u
         ON CONFLICT (id) DO UPDATE SET
             updated_at = EXCLUDED.updated_at, archived = EXCLUDED.archived,
             data = EXCLUDED.data, properties = EXCLUDED.properties,
             created_at = EXCLUDED.created_at, archived_at = EXCLUDED.archived_at,
             _weld_run_id = EXCLUDED._weld_run_id, _weld_synced_at = EXCLUDED._weld_synced_at"
    );
    tx.execute(&sql, &[&ids, &times, &archived, &documents, &run_id])
        .await
        .map_err(database)?;
    Ok(())
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

/// A new run, saved, closing the older runs still marked running.
async fn open_run(
    tx: &Transaction<'_>,
    stream: &str,
    run_id: RunId,
    at: Timestamp,
) -> Result<RunRecord, Error> {
    let older = tx
        .query(
            "SELECT run::text FROM weld.runs WHERE stream = $1 AND run_id < $2
             ORDER BY run_id DESC LIMIT 8 FOR UPDATE",
            &[&stream, &id_i64(run_id.0)?],
        )
        .await
        .map_err(database)?;
    for row in older {
        let mut run = decode_run(row.get(0))?;
        if run.abandon(at) {
            save_run(tx, stream, &run).await?;
        }
    }
    let run = RunRecord::started(run_id, at);
    save_run(tx, stream, &run).await?;
    Ok(run)
}

#[async_trait]
impl Sink for PostgresStore {
    async fn commit(&self, batch: &Batch) -> Result<Commit, Error> {
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
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT entry::text FROM weld.streams WHERE name = $1 AND entry IS NOT NULL",
                &[&name.as_str()],
            )
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
        let table = tables::records_table(&entry.name, Some(&entry.config.source.kind));
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
        Ok(())
    }

    async fn delete_stream(&self, name: &StreamName) -> Result<(), Error> {
        let Some(table) = self.table(name).await? else {
            return Ok(());
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(database)?;
        let stream = name.as_str();
        tx.query_opt(
            "SELECT 1 FROM weld.streams WHERE name = $1 FOR UPDATE",
            &[&stream],
        )
        .await
        .map_err(database)?;
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
            .await
            .map_err(database)?;
        for sql in [
            "DELETE FROM weld.batches WHERE stream = $1",
            "DELETE FROM weld.runs WHERE stream = $1",
            // The epoch outlives the stream, raised: a batch of the deleted stream still on its
            // way cannot move the checkpoint of a new stream of the name.
            "UPDATE weld.streams SET entry = NULL, checkpoint = NULL, live = 0, archived = 0,
                 epoch = epoch + 1
             WHERE name = $1",
        ] {
            tx.execute(sql, &[&stream]).await.map_err(database)?;
        }
        tx.commit().await.map_err(database)?;
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(())
    }

    async fn resume(&self, stream: &StreamName) -> Result<Resume, Error> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT epoch, checkpoint FROM weld.streams WHERE name = $1",
                &[&stream.as_str()],
            )
            .await
            .map_err(database)?;
        Ok(match row {
            Some(row) => Resume {
                epoch: row.get::<_, i64>(0) as u64,
                checkpoint: row
                    .get::<_, Option<Vec<u8>>>(1)
                    .map_or_else(Checkpoint::start, Checkpoint::from_bytes),
            },
            None => Resume {
                epoch: 0,
                checkpoint: Checkpoint::start(),
            },
        })
    }

    async fn resync(&self, stream: &StreamName) -> Result<u64, Error> {
        self.ensure(stream, None).await?;
        let epoch: i64 = self
            .client()
            .await?
            .query_one(
                "UPDATE weld.streams SET epoch = epoch + 1, checkpoint = NULL WHERE name = $1
                 RETURNING epoch",
                &[&stream.as_str()],
            )
            .await
            .map_err(database)?
            .get(0);
        Ok(epoch as u64)
    }

    async fn counts(&self, stream: &StreamName) -> Result<Counts, Error> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT live, archived FROM weld.streams WHERE name = $1",
                &[&stream.as_str()],
            )
            .await
            .map_err(database)?;
        Ok(row.map_or_else(Counts::default, |row| Counts {
            live: row.get::<_, i64>(0) as u64,
            archived: row.get::<_, i64>(1) as u64,
        }))
    }

    async fn records(
        &self,
        stream: &StreamName,
        after: Option<&str>,
        limit: usize,
        archived: Archived,
    ) -> Result<RecordPage, Error> {
        let after = after.map(decode_token).transpose()?;
        let Some(table) = self.table(stream).await? else {
            return Ok(RecordPage {
                records: vec![],
                next: None,
            });
        };
        let filter = match archived {
            Archived::Live => "NOT archived",
            Archived::Only => "archived",
            Archived::All => "true",
        };
        // Keyset paging on the key order: every record that exists from the first page to the
        // last is visited once, in its latest version, while commits go on.
        let sql = format!(
            "SELECT id, {MS}, archived, data::text FROM {table}
             WHERE ($1::text IS NULL OR (octet_length(id), id) > (octet_length($1::text), $1::text))
               AND {filter}
             ORDER BY octet_length(id), id LIMIT $2"
        );
        let limit = limit.max(1);
        let rows = match self
            .client()
            .await?
            .query(&sql, &[&after, &(limit as i64 + 1)])
            .await
        {
            Ok(rows) => rows,
            // The stream was deleted meanwhile: nothing to list.
            Err(e) if e.code().map(|c| c.code()) == Some("42P01") => vec![],
            Err(e) => return Err(database(e)),
        };
        let more = rows.len() > limit;
        let records: Vec<Record> = rows
            .into_iter()
            .take(limit)
            .map(|row| {
                let data: String = row.get(3);
                Record {
                    id: row.get(0),
                    updated_at: Timestamp::from_millis(row.get(1)),
                    archived: row.get(2),
                    amend: false,
                    data: Json::from_checked_bytes(data.into_bytes().into()),
                }
            })
            .collect();
        let next = more
            .then(|| records.last().map(|r| encode_token(&r.id)))
            .flatten();
        Ok(RecordPage { records, next })
    }

    async fn runs(&self, stream: &StreamName, limit: usize) -> Result<Vec<RunRecord>, Error> {
        self.client()
            .await?
            .query(
                "SELECT run::text FROM weld.runs WHERE stream = $1 ORDER BY run_id DESC LIMIT $2",
                &[&stream.as_str(), &(limit as i64)],
            )
            .await
            .map_err(database)?
            .into_iter()
            .map(|row| decode_run(row.get(0)))
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
        let name = stream.as_str();
        tx.query_one(
            "SELECT 1 FROM weld.streams WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await
        .map_err(database)?;
        if load_run(&tx, name, id_i64(run_id.0)?).await?.is_none() {
            open_run(&tx, name, run_id, at).await?;
        }
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
