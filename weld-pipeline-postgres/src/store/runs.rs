//! The run history in `weld.runs`: one JSON document per run, opened by its start or its first
//! batch, closed by its outcome or a newer run, and read back with what its committed batches
//! say of it (see `ledger` for the figures summed and folded into its row).

use tokio_postgres::Transaction;
use weld_pipeline::store::{RunRecord, RunState};
use weld_pipeline::{Error, RunId, RunOutcome, StreamName, Timestamp};

use super::{id_i64, PostgresStore};
use crate::error::database;

/// Each run of `$1`, newest first, at most `$2`, as recorded, with what its committed batches
/// say of it: the rows of the ledger past its summed figures, and its folded figures.
const HISTORY: &str = "SELECT r.run::text,
        a.batches + coalesce(r.summed_seq + 1, 0) + coalesce(r.folded_batches, 0),
        a.records + coalesce(r.summed_records, 0) + coalesce(r.folded_records, 0),
        a.repaired + coalesce(r.summed_repaired, 0)
            + coalesce(r.folded_repaired, 0),
        a.purged + coalesce(r.summed_purged, 0) + coalesce(r.folded_purged, 0),
        greatest(a.top, r.summed_seq, r.folded_top),
        coalesce(a.last_seq, r.summed_last_seq, r.folded_last_seq),
        (extract(epoch FROM greatest(a.done_at, r.summed_done_at,
                                     r.folded_done_at)) * 1000)::bigint
 FROM weld.runs r
 LEFT JOIN LATERAL (
     SELECT count(*) AS batches, coalesce(sum(records), 0)::bigint AS records,
            coalesce(sum(repaired), 0)::bigint AS repaired,
            coalesce(sum(purged), 0)::bigint AS purged, max(seq) AS top,
            max(seq) FILTER (WHERE last) AS last_seq, max(committed_at) AS done_at
     FROM weld.batches b
     WHERE b.stream = r.stream AND b.run_id = r.run_id
       AND b.seq > coalesce(r.summed_seq, -1)
 ) a ON true
 WHERE r.stream = $1 ORDER BY r.run_id DESC LIMIT $2";

impl PostgresStore {
    /// The newest `limit` runs of `stream`, newest first.
    pub(super) async fn run_history(
        &self,
        stream: &StreamName,
        limit: usize,
    ) -> Result<Vec<RunRecord>, Error> {
        let rows = self
            .client()
            .await?
            .query(HISTORY, &[&stream.as_str(), &(limit as i64)])
            .await
            .map_err(database)?;
        rows.iter().map(run_of).collect()
    }

    /// Records that run `run_id` of `stream` started at `at`, unless it is known.
    pub(super) async fn record_start(
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

    /// Records how run `run_id` of `stream` ended.
    pub(super) async fn record_finish(
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
}

/// A run of [`HISTORY`]'s row: as recorded, its figures those of its committed batches, and
/// succeeded once they are complete.
fn run_of(row: &tokio_postgres::Row) -> Result<RunRecord, Error> {
    let mut run = decode_run(row.get(0))?;
    let batches: i64 = row.get(1);
    run.batches = batches as u64;
    run.records = row.get::<_, i64>(2) as u64;
    run.repaired = row.get::<_, i64>(3) as u64;
    run.purged = row.get::<_, i64>(4) as u64;
    let top: Option<i64> = row.get(5);
    let last_seq: Option<i64> = row.get(6);
    // Seqs are unique and from 0: as many batches as the highest seq + 1 is no gap.
    let contiguous = top.filter(|top| batches == top + 1);
    run.progress.contiguous = contiguous.map(|c| c as u64);
    run.progress.last_seq = last_seq.map(|l| l as u64);
    if run.progress.is_complete() {
        run.state = RunState::Succeeded;
        run.error = None;
        run.finished_at = row.get::<_, Option<i64>>(7).map(Timestamp::from_millis);
    }
    Ok(run)
}

fn decode_run(value: &str) -> Result<RunRecord, Error> {
    serde_json::from_str(value)
        .map_err(|e| Error::Bug(format!("a stored run does not decode: {e}")))
}

/// `run` as the `run` column's text.
pub(super) fn encode_run(run: &RunRecord) -> Result<String, Error> {
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

/// Closes the runs of the stream older than `run_id` still marked running: a newer run started.
pub(super) async fn abandon_older(
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
