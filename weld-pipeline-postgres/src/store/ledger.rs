//! What the ledger `weld.batches` adds up to: a stream's counts and checkpoint, read from its
//! rows, and the two ways its rows stay few: a run's committed rows summed into its `weld.runs`
//! row every [`SUM_EVERY`] batches, and the rows of runs long superseded folded into
//! `weld.totals` and their runs' rows.

use tokio_postgres::Transaction;
use weld_pipeline::store::{Counts, Resume};
use weld_pipeline::{Checkpoint, Error, StreamName};

use super::PostgresStore;
use crate::error::database;

/// How long a superseded run's ledger rows stay as they are before they are folded: long past
/// any redelivery of its batches (a worker starts a run only once its outbox has drained, so
/// once a newer run has begun, no batch of an older one is still on its way from that worker).
const FOLD_AFTER_SECS: f64 = 3_600.0;

/// Every this many batches of a run (at `seq`s 63, 127, ...), the commit sums the run's
/// committed ledger rows into its `weld.runs` row ([`sum_committed`]): a status then sums at
/// most about as many rows, plus those in flight, whatever the run's size.
pub(super) const SUM_EVERY: i64 = 64;

/// The live and archived counts of stream `$1`. The runs with ledger rows (every row has its
/// run's row, written with it): each one's summed deltas and those of its rows past them, and
/// the totals of the rows folded.
const COUNTS: &str =
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
   AND r.run_id >= (SELECT min(run_id) FROM weld.batches WHERE stream = $1)";

/// The checkpoint the ledger of stream `$1` holds at epoch `$2`: the cursor of the last batch of
/// the newest run that has committed its first batch, up to which every batch of that run is
/// committed. Batches of older epochs do not count.
const CHECKPOINT: &str = "SELECT b.cursor FROM weld.batches b
 WHERE b.stream = $1 AND b.epoch >= $2
   AND b.run_id = (SELECT max(run_id) FROM weld.batches
                   WHERE stream = $1 AND epoch >= $2 AND seq = 0)
   AND NOT EXISTS (SELECT 1 FROM weld.batches n
                   WHERE n.stream = b.stream AND n.run_id = b.run_id
                     AND n.seq = b.seq + 1 AND n.epoch >= $2)
 ORDER BY b.seq LIMIT 1";

/// The runs of stream `$1` older than `$2` whose ledger rows are due to be folded (the last
/// committed more than `$3` seconds ago), their rows locked, newest first.
const DUE: &str = "SELECT run_id FROM weld.runs WHERE stream = $1 AND run_id IN (
     SELECT run_id FROM weld.batches WHERE stream = $1 AND run_id < $2
     GROUP BY run_id
     HAVING max(committed_at) < now() - make_interval(secs => $3))
 ORDER BY run_id DESC FOR UPDATE";

/// Folds the ledger rows of stream `$1`'s runs `$2` (an array): deleted, their count deltas
/// added to `weld.totals`, their runs' figures (summed ones with those of the rows past them)
/// to the runs' rows.
const FOLD: &str = "WITH old AS (
     DELETE FROM weld.batches b WHERE b.stream = $1 AND b.run_id = ANY($2)
     RETURNING b.run_id, b.seq, b.last, b.records, b.repaired, b.purged, b.live_delta,
               b.archived_delta, b.committed_at
 ), unsummed AS (
     SELECT o.run_id, count(*) AS batches, sum(o.records)::bigint AS records,
            sum(o.repaired)::bigint AS repaired, sum(o.purged)::bigint AS purged,
            max(o.seq) AS top,
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
            coalesce(u.purged, 0) + coalesce(r.summed_purged, 0) AS purged,
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
         folded_purged = coalesce(r.folded_purged, 0) + p.purged,
         folded_top = greatest(r.folded_top, p.top),
         folded_last_seq = coalesce(p.last_seq, r.folded_last_seq),
         folded_done_at = greatest(r.folded_done_at, p.done_at),
         summed_seq = NULL, summed_records = NULL, summed_repaired = NULL, summed_purged = NULL,
         summed_live = NULL, summed_archived = NULL, summed_last_seq = NULL,
         summed_done_at = NULL
     FROM per_run p WHERE r.stream = $1 AND r.run_id = p.run_id
 )
 INSERT INTO weld.totals (stream, live, archived)
 SELECT $1, coalesce(sum(live), 0), coalesce(sum(archived), 0) FROM per_run
 HAVING count(*) > 0
 ON CONFLICT (stream) DO UPDATE SET live = weld.totals.live + EXCLUDED.live,
     archived = weld.totals.archived + EXCLUDED.archived";

/// Adds to the summed figures of run `$2` of stream `$1` its ledger rows past seq `$3` up to the
/// first gap, and moves `summed_seq` to the last of them. The k-th row past `$3` continues the
/// run of contiguous seqs exactly when seq = `$3` + k.
const SUM: &str = "WITH next AS (
     SELECT seq, records, repaired, purged, live_delta, archived_delta, last, committed_at,
            seq - row_number() OVER (ORDER BY seq) AS shift
     FROM weld.batches WHERE stream = $1 AND run_id = $2 AND seq > $3
 ), prefix AS (
     SELECT count(*) AS n, max(seq) AS top, sum(records)::bigint AS records,
            sum(repaired)::bigint AS repaired, sum(purged)::bigint AS purged,
            sum(live_delta)::bigint AS live,
            sum(archived_delta)::bigint AS archived,
            max(seq) FILTER (WHERE last) AS last_seq, max(committed_at) AS done_at
     FROM next WHERE shift = $3
 )
 UPDATE weld.runs r SET
     summed_seq = p.top,
     summed_records = coalesce(r.summed_records, 0) + p.records,
     summed_repaired = coalesce(r.summed_repaired, 0) + p.repaired,
     summed_purged = coalesce(r.summed_purged, 0) + p.purged,
     summed_live = coalesce(r.summed_live, 0) + p.live,
     summed_archived = coalesce(r.summed_archived, 0) + p.archived,
     summed_last_seq = coalesce(p.last_seq, r.summed_last_seq),
     summed_done_at = greatest(r.summed_done_at, p.done_at)
 FROM prefix p WHERE r.stream = $1 AND r.run_id = $2 AND p.n > 0";

impl PostgresStore {
    /// The stream's epoch and the checkpoint its ledger holds at it.
    pub(super) async fn resume_point(&self, stream: &StreamName) -> Result<Resume, Error> {
        let client = self.client().await?;
        let epoch: i64 = client
            .query_opt(
                "SELECT epoch FROM weld.streams WHERE name = $1",
                &[&stream.as_str()],
            )
            .await
            .map_err(database)?
            .map_or(0, |row| row.get(0));
        let checkpoint = client
            .query_opt(CHECKPOINT, &[&stream.as_str(), &epoch])
            .await
            .map_err(database)?
            .map_or_else(Checkpoint::start, |row| {
                Checkpoint::from_bytes(row.get::<_, Vec<u8>>(0))
            });
        Ok(Resume {
            epoch: epoch as u64,
            checkpoint,
        })
    }

    /// The stream's live and archived counts, as its ledger adds them up.
    pub(super) async fn ledger_counts(&self, stream: &StreamName) -> Result<Counts, Error> {
        let row = self
            .client()
            .await?
            .query_one(COUNTS, &[&stream.as_str()])
            .await
            .map_err(database)?;
        Ok(Counts {
            live: row.get::<_, i64>(0).max(0) as u64,
            archived: row.get::<_, i64>(1).max(0) as u64,
        })
    }
}

/// Folds the ledger rows of the stream's runs older than `run_id` whose last batch committed
/// more than [`FOLD_AFTER_SECS`] ago: their count deltas are added to `weld.totals`, their
/// run's figures (its summed ones with those of its rows past them) to its `weld.runs` row, and
/// the rows are deleted. The checkpoint never reads them (it is the newest run's), and counts
/// and the run history read the folded figures with the rows that remain. A batch of a folded
/// run delivered again would be written again, harmlessly: its records are no newer than what
/// is stored.
pub(super) async fn fold_older(
    tx: &Transaction<'_>,
    stream: &str,
    run_id: i64,
) -> Result<(), Error> {
    // The runs' rows locked first, as `sum_committed` does: the fold then reads them, and their
    // ledger, after any summing of them committed, and no row is counted twice. Newest first,
    // the order `abandon_older` locks them in, so the two never wait for each other in a cycle.
    let due: Vec<i64> = tx
        .query(DUE, &[&stream, &run_id, &FOLD_AFTER_SECS])
        .await
        .map_err(database)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    tx.execute(FOLD, &[&stream, &due]).await.map_err(database)?;
    Ok(())
}

/// Adds to the run's summed figures its ledger rows past `summed_seq` up to the first gap (a
/// batch not committed yet), and moves `summed_seq` to the last of them. Rows once committed
/// never change until they are folded or the stream deleted, so the sums stay true.
pub(super) async fn sum_committed(
    tx: &Transaction<'_>,
    stream: &str,
    run_id: i64,
) -> Result<(), Error> {
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
    tx.execute(SUM, &[&stream, &run_id, &from])
        .await
        .map_err(database)?;
    Ok(())
}
