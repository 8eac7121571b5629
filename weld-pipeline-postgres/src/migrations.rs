//! The schema, as an ordered list of versions applied once each.
//!
//! [`apply`] runs at start: in one transaction, under an exclusive lock of `weld.migrations`
//! (several data-streams may start at once on one database), it applies every version above the
//! highest recorded, in order, and records each. A version, once released, never changes: a
//! change of schema is a new version. Nothing is ever dropped and recreated.

use tokio_postgres::Client;
use weld_pipeline::Error;

use crate::error::database;

/// The versions, in order: `(version, SQL)`.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE weld.streams (
    name text COLLATE "C" PRIMARY KEY,
    entry jsonb,
    records_table text NOT NULL,
    epoch bigint NOT NULL DEFAULT 0
);
-- The ledger. A commit writes only its own row here (and its records): counts, run progress
-- and the checkpoint are read from these rows, so commits of one stream never wait for
-- each other.
CREATE TABLE weld.batches (
    stream text COLLATE "C" NOT NULL,
    run_id bigint NOT NULL,
    seq bigint NOT NULL,
    epoch bigint NOT NULL,
    last boolean NOT NULL,
    records bigint NOT NULL,
    written bigint NOT NULL,
    repaired bigint NOT NULL,
    live_delta bigint NOT NULL,
    archived_delta bigint NOT NULL,
    cursor bytea NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, run_id, seq)
);
CREATE TABLE weld.runs (
    stream text COLLATE "C" NOT NULL,
    run_id bigint NOT NULL,
    run jsonb NOT NULL,
    PRIMARY KEY (stream, run_id)
);
CREATE TABLE weld.probe (
    id integer PRIMARY KEY,
    at timestamptz NOT NULL
);
"#,
    ),
    (
        2,
        r#"
-- Safe casts for the typed views: a value that does not read as its type reads as NULL, so one
-- bad value never breaks a query over the view. '' (HubSpot's "no value") is NULL too.
CREATE FUNCTION weld.to_numeric(value text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF value IS NULL OR btrim(value) = '' THEN RETURN NULL; END IF;
    RETURN value::numeric;
EXCEPTION WHEN others THEN RETURN NULL;
END $$;
CREATE FUNCTION weld.to_boolean(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE lower(btrim(value)) WHEN 'true' THEN true WHEN 'false' THEN false END
$$;
-- RFC 3339 (an instant without an offset is read as UTC), or milliseconds since the epoch.
CREATE FUNCTION weld.to_timestamptz(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    IF value ~ '^-?[0-9]{1,15}$' THEN RETURN to_timestamp(value::bigint / 1000.0); END IF;
    IF value !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}' THEN RETURN NULL; END IF;
    IF value ~ '(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$' THEN RETURN value::timestamptz; END IF;
    RETURN (value::timestamp) AT TIME ZONE 'UTC';
EXCEPTION WHEN others THEN RETURN NULL;
END $$;
-- YYYY-MM-DD, or milliseconds since the epoch (HubSpot's date properties: midnight UTC).
CREATE FUNCTION weld.to_date(value text) RETURNS date
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    IF value ~ '^-?[0-9]{1,15}$' THEN
        RETURN (to_timestamp(value::bigint / 1000.0) AT TIME ZONE 'UTC')::date;
    END IF;
    IF value !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN RETURN NULL; END IF;
    RETURN value::date;
EXCEPTION WHEN others THEN RETURN NULL;
END $$;
-- Several values joined by ';' (a multiple-choice enumeration), without empty ones.
CREATE FUNCTION weld.to_list(value text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL OR value = '' THEN NULL
                ELSE array_remove(string_to_array(value, ';'), '') END
$$;
"#,
    ),
    (
        3,
        r#"
-- The ledger rows of runs long superseded are folded: their count deltas into weld.totals,
-- their run's figures into its weld.runs row, so counts and the run history read few rows
-- however long a stream has run.
CREATE TABLE weld.totals (
    stream text COLLATE "C" PRIMARY KEY,
    live bigint NOT NULL,
    archived bigint NOT NULL
);
ALTER TABLE weld.runs
    ADD COLUMN folded_batches bigint,
    ADD COLUMN folded_records bigint,
    ADD COLUMN folded_repaired bigint,
    ADD COLUMN folded_top bigint,
    ADD COLUMN folded_last_seq bigint,
    ADD COLUMN folded_done_at timestamptz;
"#,
    ),
    (
        4,
        r#"
-- Which data-streams replica runs each stream: the holder of its lease until expires_at. The
-- epoch grows whenever the lease is taken afresh (from another replica, or after it lapsed),
-- so what was done under an older epoch can be told and refused.
CREATE TABLE weld.leases (
    stream text COLLATE "C" PRIMARY KEY,
    owner text,
    epoch bigint NOT NULL DEFAULT 0,
    expires_at timestamptz
);
"#,
    ),
    (
        5,
        r#"
-- The worker the holder runs each stream on, so that every replica's status can name it; in
-- the ledger, the replica that committed each batch (null for a store not fenced by leases).
ALTER TABLE weld.leases ADD COLUMN worker text;
ALTER TABLE weld.batches ADD COLUMN replica text;
-- The replicas alive, with how many workers each has: a replica takes its share of the streams
-- in proportion.
CREATE TABLE weld.replicas (
    id text COLLATE "C" PRIMARY KEY,
    workers integer NOT NULL,
    expires_at timestamptz NOT NULL
);
"#,
    ),
    (
        6,
        r#"
-- A run's ledger rows summed as its commits go: the figures of its batches 0..=summed_seq
-- (all committed), so a status sums only the rows past them, not the whole run's.
ALTER TABLE weld.runs
    ADD COLUMN summed_seq bigint,
    ADD COLUMN summed_records bigint,
    ADD COLUMN summed_repaired bigint,
    ADD COLUMN summed_live bigint,
    ADD COLUMN summed_archived bigint,
    ADD COLUMN summed_last_seq bigint,
    ADD COLUMN summed_done_at timestamptz;
"#,
    ),
    (
        7,
        r#"
-- A record's whole document is kept as the JSON text it came as (`json`), no longer parsed
-- into `jsonb`: a records page prints it back as stored instead of rebuilding the text from
-- jsonb's binary form, most of a page's time in the database. `properties` stays `jsonb`.
-- Each records table is rewritten once, as long as copying it takes: without the store's
-- statement timeout, which a large warehouse would exceed at every start. One that cannot be
-- rewritten (a view, an index or a constraint of the user's own needs `data` in jsonb, another
-- role owns it) keeps `jsonb`, which every statement of the store reads and writes as well.
SET LOCAL statement_timeout = 0;
DO $$
DECLARE
    records regclass;
BEGIN
    FOR records IN
        SELECT to_regclass(records_table) FROM weld.streams
        WHERE to_regclass(records_table) IS NOT NULL
    LOOP
        BEGIN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN data TYPE json USING data::json',
                           records);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'weld: %.data stays jsonb: %', records, SQLERRM;
        END;
    END LOOP;
END
$$;
"#,
    ),
    (
        8,
        r#"
-- Records a purge removed (a privacy deletion at the source), per batch, and as the run's
-- figures are summed and folded. Rows of the ledger written before read 0: no purge was
-- possible then.
ALTER TABLE weld.batches ADD COLUMN purged bigint NOT NULL DEFAULT 0;
ALTER TABLE weld.runs
    ADD COLUMN folded_purged bigint,
    ADD COLUMN summed_purged bigint;
"#,
    ),
];

/// Applies the versions the database lacks; returns how many it applied.
///
/// # Errors
///
/// When the database cannot be reached or a statement fails.
pub async fn apply(client: &mut Client) -> Result<usize, Error> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS weld;
             CREATE TABLE IF NOT EXISTS weld.migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await
        .or_else(|e| {
            // Two processes creating the schema at once: one of them loses the race on the
            // catalog; the other's schema is as good.
            match e.code() {
                Some(code) if code.code() == "23505" || code.code() == "42P07" => Ok(()),
                _ => Err(database(e)),
            }
        })?;
    let transaction = client.transaction().await.map_err(database)?;
    transaction
        .batch_execute("LOCK TABLE weld.migrations IN EXCLUSIVE MODE")
        .await
        .map_err(database)?;
    let applied: i32 = transaction
        .query_one("SELECT coalesce(max(version), 0) FROM weld.migrations", &[])
        .await
        .map_err(database)?
        .get(0);
    let mut count = 0;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
        transaction.batch_execute(sql).await.map_err(database)?;
        transaction
            .execute(
                "INSERT INTO weld.migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(database)?;
        tracing::info!(version, "PostgreSQL schema migrated");
        count += 1;
    }
    transaction.commit().await.map_err(database)?;
    Ok(count)
}
