//! The write path: a batch committed in one transaction, what a commit acknowledges.
//!
//! The transaction touches the batch's own ledger row, its records' rows and, for a run's
//! first batch, its run's row: commits of one stream in flight at once wait for each other
//! only where they write the same record. Four round trips:
//!
//! 1. `BEGIN`;
//! 2. the replica's lease checked (when fenced), the ledger looked up and the stored versions
//!    locked, pipelined ([`PostgresStore::look_up`]);
//! 3. one statement writing the records, the ledger row and the run ([`write_sql`]);
//! 4. `COMMIT`.
//!
//! A row another commit inserted between 2 and 3 is decided again against it
//! ([`settle_raced`]), the rows of records purged are deleted with their links ([`purge`]), and
//! a stream with a link table has its links refreshed; each adds round trips only when it
//! happens.

use std::collections::HashMap;

use weld_pipeline::{Batch, Commit, Error, Json, Timestamp};

use super::ledger::{fold_older, sum_committed, SUM_EVERY};
use super::millis::Millis;
use super::params::{Param, Params};
use super::plan::{decide, Moved, Plan, Stored, Versions};
use super::rows::{upsert_sql, Columns, Upsert};
use super::runs::{abandon_older, encode_run};
use super::{id_i64, links, PostgresStore};
use crate::error::database;
use crate::fence::Fence;
use crate::statements::prepared;

/// A transaction on a pooled connection (its statement cache at hand).
type Tx<'c> = deadpool_postgres::Transaction<'c>;

/// Whether the batch `$1`, `$2`, `$3` (stream, run id, seq) is in the ledger.
const SEEN: &str = "SELECT 1 FROM weld.batches WHERE stream = $1 AND run_id = $2 AND seq = $3";

/// A batch's identity, as the ledger keys it.
struct Key<'a> {
    stream: &'a str,
    run_id: i64,
    seq: i64,
}

impl<'a> Key<'a> {
    fn of(batch: &'a Batch) -> Result<Self, Error> {
        Ok(Key {
            stream: batch.stream.as_str(),
            run_id: id_i64(batch.run_id.0)?,
            seq: id_i64(batch.seq)?,
        })
    }
}

/// A commit's row of the ledger `weld.batches`, by column, and its run's document.
struct LedgerRow<'a> {
    key: Key<'a>,
    epoch: i64,
    last: bool,
    records: i64,
    written: i64,
    repaired: i64,
    purged: i64,
    live_delta: i64,
    archived_delta: i64,
    cursor: &'a [u8],
    replica: Option<&'a str>,
    /// The run's document, for its `weld.runs` row when this is its first batch to commit.
    run: String,
}

impl<'a> LedgerRow<'a> {
    fn of(
        batch: &'a Batch,
        key: Key<'a>,
        moved: &Moved,
        fence: Option<&'a Fence>,
    ) -> Result<Self, Error> {
        Ok(LedgerRow {
            key,
            epoch: id_i64(batch.epoch)?,
            last: batch.last,
            records: batch.records.len() as i64,
            written: moved.written as i64,
            repaired: id_i64(batch.repaired)?,
            purged: moved.purged as i64,
            live_delta: moved.live,
            archived_delta: moved.archived,
            cursor: batch.cursor.as_bytes(),
            replica: fence.map(Fence::replica),
            run: encode_run(&weld_pipeline::store::RunRecord::started(
                batch.run_id,
                Timestamp::now(),
            ))?,
        })
    }

    /// The row's columns past its run's (`stream`, `run_id`), each with its value: a new
    /// column of the ledger is one more line here.
    fn columns(&self) -> Vec<(&'static str, Param<'_>)> {
        vec![
            ("seq", &self.key.seq),
            ("epoch", &self.epoch),
            ("last", &self.last),
            ("records", &self.records),
            ("written", &self.written),
            ("repaired", &self.repaired),
            ("purged", &self.purged),
            ("live_delta", &self.live_delta),
            ("archived_delta", &self.archived_delta),
            ("cursor", &self.cursor),
            ("replica", &self.replica),
        ]
    }
}

/// What the writing statement did, when it wrote the ledger row.
struct Written {
    /// Whether it recorded the run: the run's first batch to commit.
    run_recorded: bool,
    /// The ids it inserted (of those the plan meant to).
    inserted: Vec<String>,
}

impl PostgresStore {
    /// Commits `batch`: waits its turn among the commits in progress, makes the stream's
    /// records table if missing, and writes.
    pub(super) async fn commit_batch(&self, batch: &Batch) -> Result<Commit, Error> {
        let _turn = self
            .commits
            .acquire()
            .await
            .map_err(|_| Error::Bug("the store's commit semaphore is closed".into()))?;
        let table = self.ensure(&batch.stream, None).await?;
        self.write(batch, &table).await
    }

    /// Writes a batch to `table` in one transaction (see the module doc).
    async fn write(&self, batch: &Batch, table: &str) -> Result<Commit, Error> {
        let links = self.links(&batch.stream, table, &batch.records).await?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(database)?;
        let versions = Versions::of(&batch.records);
        let Some(stored) = self.look_up(&tx, batch, table, &versions).await? else {
            return Ok(Commit::Replayed);
        };
        let plan = Plan::of(&versions, &stored);
        let ledger = LedgerRow::of(batch, Key::of(batch)?, &plan.moved, self.fence.as_ref())?;
        let Some(written) = write_plan(&tx, table, &plan, &ledger).await? else {
            // The same batch, delivered twice at once, committed first by the other delivery.
            return Ok(Commit::Replayed);
        };
        let moved = settle_raced(&tx, table, &ledger, &plan, &versions, &written.inserted).await?;
        purge(&tx, table, links.as_deref(), &plan.deletes).await?;
        if let Some(links) = &links {
            // The links of every record written, again from its stored document.
            links::refresh(&tx, links, table, &plan.written()).await?;
        }
        keep_books(&tx, batch, &ledger.key, written.run_recorded).await?;
        tx.commit().await.map_err(database)?;
        Ok(Commit::Stored {
            records: moved.written,
        })
    }

    /// The stored heads of the batch's records, locked; `None` when the batch is in the ledger
    /// already (a replay). A replica's lease is checked first, in the same pipeline: nothing is
    /// written (the transaction rolls back) unless it holds.
    async fn look_up(
        &self,
        tx: &Tx<'_>,
        batch: &Batch,
        table: &str,
        versions: &Versions<'_>,
    ) -> Result<Option<HashMap<String, Stored>>, Error> {
        let key = Key::of(batch)?;
        let seen = async {
            let statement = prepared(tx, SEEN).await.map_err(database)?;
            tx.query_opt(&statement, &[&key.stream, &key.run_id, &key.seq])
                .await
                .map_err(database)
        };
        let fenced = async {
            match &self.fence {
                Some(fence) => fence.check(tx, &batch.stream, batch.lease).await,
                None => Ok(()),
            }
        };
        let ids = versions.ids();
        let (fenced, seen, stored) =
            tokio::join!(fenced, seen, heads(tx, table, &ids, versions.amends));
        fenced?;
        if seen?.is_some() {
            return Ok(None);
        }
        stored.map(Some)
    }
}

/// Runs the commit's writing statement; `None` when it found the ledger row written meanwhile.
async fn write_plan(
    tx: &Tx<'_>,
    table: &str,
    plan: &Plan<'_>,
    ledger: &LedgerRow<'_>,
) -> Result<Option<Written>, Error> {
    let (updates, inserts) = (Columns::of(&plan.updates), Columns::of(&plan.inserts));
    let mut params = Params::default();
    let sql = write_sql(table, &updates, &inserts, ledger, &mut params);
    let statement = prepared(tx, &sql).await.map_err(database)?;
    let row = tx
        .query_one(&statement, params.values())
        .await
        .map_err(database)?;
    if row.get::<_, i64>(0) == 0 {
        return Ok(None);
    }
    Ok(Some(Written {
        run_recorded: row.get::<_, i64>(1) == 1,
        inserted: row.get(2),
    }))
}

/// The statement writing `updates` and `inserts` to `table`, the ledger row and (unless it
/// is there) the run's row, each value bound in `params`. It returns whether it wrote the
/// ledger row and the run's, and the ids it inserted.
fn write_sql<'a>(
    table: &str,
    updates: &'a Columns<'a>,
    inserts: &'a Columns<'a>,
    ledger: &'a LedgerRow<'a>,
    params: &mut Params<'a>,
) -> String {
    let stream = params.bind(&ledger.key.stream);
    let run_id = params.bind(&ledger.key.run_id);
    let run = params.bind(&ledger.run);
    let (mut columns, mut values) = (Vec::new(), Vec::new());
    for (column, value) in ledger.columns() {
        columns.push(column);
        values.push(params.bind(value));
    }
    let (columns, values) = (columns.join(", "), values.join(", "));
    let updated = upsert_sql(table, &updates.bind(params), &run_id, Upsert::Update);
    let inserted = upsert_sql(table, &inserts.bind(params), &run_id, Upsert::Insert);
    format!(
        "WITH updated AS ({updated}), inserted AS ({inserted}),
         ledger AS (
             INSERT INTO weld.batches (stream, run_id, {columns})
             VALUES ({stream}, {run_id}, {values})
             ON CONFLICT DO NOTHING RETURNING 1),
         run AS (
             INSERT INTO weld.runs (stream, run_id, run)
             VALUES ({stream}, {run_id}, {run}::text::jsonb)
             ON CONFLICT DO NOTHING RETURNING 1)
         SELECT (SELECT count(*) FROM ledger), (SELECT count(*) FROM run),
                ARRAY(SELECT id FROM inserted)"
    )
}

/// The rows the plan meant to insert that another commit inserted meanwhile (those not among
/// `inserted`), decided again against what it wrote: written, and the ledger row's figures
/// corrected. Returns what the batch moved in the end.
async fn settle_raced(
    tx: &Tx<'_>,
    table: &str,
    ledger: &LedgerRow<'_>,
    plan: &Plan<'_>,
    versions: &Versions<'_>,
    inserted: &[String],
) -> Result<Moved, Error> {
    let mut moved = plan.moved;
    let raced: Vec<&str> = plan
        .inserts
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !inserted.iter().any(|i| i == id))
        .collect();
    if raced.is_empty() {
        return Ok(moved);
    }
    for id in &raced {
        moved.take(&plan.moves[id]);
    }
    let again = heads(tx, table, &raced, versions.amends).await?;
    let mut updates = Vec::new();
    for id in &raced {
        // Never gone: the plan inserts a record only when a version comes after its last purge.
        let decision = decide(again.get(*id).cloned(), &versions.by_id[id]);
        moved.add(&decision.moved);
        updates.extend(decision.version);
    }
    let columns = Columns::of(&updates);
    let mut params = Params::default();
    let rows = columns.bind(&mut params);
    let run_id = params.bind(&ledger.key.run_id);
    tx.execute(
        &upsert_sql(table, &rows, &run_id, Upsert::Update),
        params.values(),
    )
    .await
    .map_err(database)?;
    let key = &ledger.key;
    tx.execute(
        "UPDATE weld.batches SET written = $4, live_delta = $5, archived_delta = $6,
             purged = $7
         WHERE stream = $1 AND run_id = $2 AND seq = $3",
        &[
            &key.stream,
            &key.run_id,
            &key.seq,
            &(moved.written as i64),
            &moved.live,
            &moved.archived,
            &(moved.purged as i64),
        ],
    )
    .await
    .map_err(database)?;
    Ok(moved)
}

/// Deletes the rows of the records `ids` purged (they exist, locked by the look-up) from
/// `table`, and their links from the link table `links` when the stream keeps one. The typed
/// view is a view of `table`: it follows.
async fn purge(tx: &Tx<'_>, table: &str, links: Option<&str>, ids: &[&str]) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let delete = format!("DELETE FROM {table} WHERE id = ANY($1::text[])");
    tx.execute(&delete, &[&ids]).await.map_err(database)?;
    if let Some(links) = links {
        let clear = crate::associations::clear_sql(links);
        tx.execute(&clear, &[&ids]).await.map_err(database)?;
    }
    Ok(())
}

/// The run bookkeeping a commit does in its transaction: the older runs closed when it
/// recorded its run, the ledger of the runs it supersedes folded at a run's first batch, and
/// the run's committed rows summed every [`SUM_EVERY`] batches.
async fn keep_books(
    tx: &Tx<'_>,
    batch: &Batch,
    key: &Key<'_>,
    run_recorded: bool,
) -> Result<(), Error> {
    if run_recorded {
        abandon_older(tx, key.stream, batch.run_id, Timestamp::now()).await?;
    }
    if batch.seq == 0 {
        // Once per run: the ledger of the runs it supersedes is folded.
        fold_older(tx, key.stream, key.run_id).await?;
    }
    if (key.seq + 1) % SUM_EVERY == 0 {
        sum_committed(tx, key.stream, key.run_id).await?;
    }
    Ok(())
}

/// The stored heads of `ids`, locked until the transaction ends (with their documents when
/// `documents`: an amendment needs them).
async fn heads(
    tx: &Tx<'_>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use weld_pipeline::{Checkpoint, Record, RunId, StreamName};

    /// Every value the commit binds is used by its statement, under the placeholder it was
    /// given, and the statement names no placeholder it was not given: what the positional
    /// `$13..$25` left to a reader's count.
    #[test]
    fn the_commits_statement_uses_each_bound_value_once_bound() {
        let batch = Batch::new(StreamName::new("contacts").unwrap(), RunId(7), 3)
            .with_records(vec![Record::new(
                "1",
                Timestamp::from_millis(1),
                Json::parse(b"{}".to_vec()).unwrap(),
            )])
            .with_cursor(Checkpoint::from_bytes("c3"))
            .with_epoch(1);
        let versions = Versions::of(&batch.records);
        let plan = Plan::of(&versions, &HashMap::new());
        let ledger = LedgerRow::of(&batch, Key::of(&batch).unwrap(), &plan.moved, None).unwrap();
        let (updates, inserts) = (Columns::of(&plan.updates), Columns::of(&plan.inserts));
        let mut params = Params::default();
        let sql = write_sql(
            "weld_records.contacts",
            &updates,
            &inserts,
            &ledger,
            &mut params,
        );
        let bound = params.values().len();
        assert_eq!(bound, 3 + ledger.columns().len() + 2 * 6);
        let named: std::collections::BTreeSet<usize> = sql
            .split('$')
            .skip(1)
            .map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().expect("a placeholder")
            })
            .collect();
        assert_eq!(named, (1..=bound).collect());
        for (column, _) in ledger.columns() {
            assert!(sql.contains(column), "{column}");
        }
    }
}
