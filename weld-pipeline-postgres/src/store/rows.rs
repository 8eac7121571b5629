//! Records as the parallel arrays a multi-row upsert reads with `unnest`, and the statement
//! that writes them: an update of rows that exist (locked by the commit), or an insert that
//! skips rows another commit inserted meanwhile.

use std::borrow::Cow;

use weld_pipeline::{Record, Timestamp};

use super::params::Params;

/// Rows as the parallel arrays `unnest` takes.
pub(super) struct Columns<'a> {
    ids: Vec<&'a str>,
    times: Vec<i64>,
    archived: Vec<bool>,
    documents: Vec<Cow<'a, str>>,
    created: Vec<Option<i64>>,
    archived_at: Vec<Option<i64>>,
}

/// The times a HubSpot-shaped document carries besides its version: `createdAt`, `archivedAt`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Times<'a> {
    #[serde(default, borrow)]
    created_at: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    archived_at: Option<Cow<'a, str>>,
}

/// A time column's value: the text as RFC 3339 in milliseconds, or none for text that is not.
fn millis(text: Option<&str>) -> Option<i64> {
    text.and_then(|t| Timestamp::parse_rfc3339(t).ok())
        .map(Timestamp::as_millis)
}

impl<'a> Columns<'a> {
    pub(super) fn of(records: &'a [Record]) -> Self {
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

    /// Binds the arrays in `params`; returns the `unnest` that reads them as rows
    /// `x(id, ms, archived, data, created, gone)`.
    pub(super) fn bind(&'a self, params: &mut Params<'a>) -> String {
        let ids = params.bind(&self.ids);
        let times = params.bind(&self.times);
        let archived = params.bind(&self.archived);
        let documents = params.bind(&self.documents);
        let created = params.bind(&self.created);
        let archived_at = params.bind(&self.archived_at);
        format!(
            "unnest({ids}::text[], {times}::bigint[], {archived}::bool[], {documents}::text[],
                    {created}::bigint[], {archived_at}::bigint[])
             AS x(id, ms, archived, data, created, gone)"
        )
    }
}

/// The JSON text with every NUL in a string (`\u0000`, the only way valid JSON holds one)
/// written as U+FFFD: `jsonb` cannot hold a NUL and refuses the whole document, which would
/// refuse the commit for good. The rest of the document is kept byte for byte.
fn without_nul(json: &str) -> Cow<'_, str> {
    if !json.contains("\\u0000") {
        return Cow::Borrowed(json);
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
    Cow::Owned(out)
}

/// Whether [`upsert_sql`] updates the rows that exist or inserts those that do not.
#[derive(Clone, Copy)]
pub(super) enum Upsert {
    /// Rows that exist, locked by this transaction: replaced.
    Update,
    /// Rows that did not exist when read: inserted, skipping any another commit inserted
    /// meanwhile.
    Insert,
}

/// The statement writing the rows `rows` reads (an `unnest` from [`Columns::bind`]), with the
/// run id at placeholder `run`, into `table`. It returns the ids it wrote.
pub(super) fn upsert_sql(table: &str, rows: &str, run: &str, upsert: Upsert) -> String {
    let conflict = match upsert {
        Upsert::Update => {
            "DO UPDATE SET
             updated_at = EXCLUDED.updated_at, archived = EXCLUDED.archived,
             data = EXCLUDED.data, properties = EXCLUDED.properties,
             created_at = EXCLUDED.created_at, archived_at = EXCLUDED.archived_at,
             _weld_run_id = EXCLUDED._weld_run_id, _weld_synced_at = EXCLUDED._weld_synced_at"
        }
        Upsert::Insert => "DO NOTHING",
    };
    format!(
        "INSERT INTO {table} AS t
             (id, updated_at, archived, data, properties, created_at, archived_at,
              _weld_run_id, _weld_synced_at)
         SELECT u.id, to_timestamp(0) + u.ms * interval '1 millisecond', u.archived, u.data,
                u.properties, to_timestamp(0) + u.created * interval '1 millisecond',
                to_timestamp(0) + u.gone * interval '1 millisecond', {run}::bigint, now()
         FROM (SELECT id, ms, archived, data::json AS data,
                      data::jsonb -> 'properties' AS properties, created, gone
               FROM {rows}) AS u
         ON CONFLICT (id) {conflict}
         RETURNING id"
    )
}

#[cfg(test)]
mod tests {
    use super::without_nul;

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
