//! A stream's typed view, `<table>_typed`: the records table with each property the source
//! described (see [`Catalog`](weld_pipeline::source::Catalog)) as a column of its type.
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
//! Every cast is safe: a value that does not read as its type, and `''` (HubSpot's "no value"),
//! reads as `NULL`, so one bad value never breaks a query. The view comes first with the
//! table's own columns (`id`, `updated_at`, `created_at`, `archived`, `archived_at`,
//! `_weld_run_id`, `_weld_synced_at`), then the properties by name. A property named like one
//! of those columns is `property_<name>`; one whose name is longer than PostgreSQL's 63-byte
//! identifiers, and those past 1,500 columns, are left out of the view (they stay in
//! `properties`).
//!
//! Property names are written by a portal's users: each reaches the statement only through
//! [`sql::identifier`] and [`sql::literal`], and the statement runs alone on the extended
//! protocol (see [`sql`]).

use weld_pipeline::source::{FieldKind, Schema};

use crate::sql;

/// The table's own columns, first in the view.
const COLUMNS: [&str; 7] = [
    "id",
    "updated_at",
    "created_at",
    "archived",
    "archived_at",
    "_weld_run_id",
    "_weld_synced_at",
];

/// The most property columns a view gets: PostgreSQL's limit is 1,664 entries.
pub(crate) const MAX_COLUMNS: usize = 1_500;

/// The statement that makes (or replaces) the typed view of `table` as `view`, and how many
/// properties it left out.
pub(crate) fn create_sql(
    table: &str,
    view: &str,
    schema: &Schema,
    replace: bool,
) -> (String, usize) {
    let mut columns: Vec<String> = COLUMNS.iter().map(|c| (*c).to_string()).collect();
    let mut left_out = 0;
    let mut properties = 0;
    for field in &schema.fields {
        let column = if COLUMNS.contains(&field.name.as_str()) {
            format!("property_{}", field.name)
        } else {
            field.name.clone()
        };
        let quoted = (sql::identifier(&column), sql::literal(&field.name));
        let (Ok(name), Ok(key)) = quoted else {
            left_out += 1;
            continue;
        };
        if column.len() > 63 || properties == MAX_COLUMNS {
            left_out += 1;
            continue;
        }
        let value = format!("properties ->> {key}");
        let expression = match field.kind {
            FieldKind::Text => value,
            FieldKind::Number => format!("weld.to_numeric({value})"),
            FieldKind::Boolean => format!("weld.to_boolean({value})"),
            FieldKind::Date => format!("weld.to_date({value})"),
            FieldKind::DateTime => format!("weld.to_timestamptz({value})"),
            FieldKind::List => format!("weld.to_list({value})"),
        };
        columns.push(format!("{expression} AS {name}"));
        properties += 1;
    }
    let verb = if replace {
        "CREATE OR REPLACE VIEW"
    } else {
        "CREATE VIEW"
    };
    let sql = format!(
        "{verb} {view} AS SELECT {} FROM {table}",
        columns.join(",\n    ")
    );
    (sql, left_out)
}

#[cfg(test)]
mod tests {
    use weld_pipeline::source::Field;

    use super::*;

    fn field(name: &str, kind: FieldKind) -> Field {
        Field {
            name: name.into(),
            kind,
        }
    }

    #[test]
    fn each_property_is_cast_to_its_kind_and_odd_names_are_quoted_or_left_out() {
        let schema = Schema::new([
            field("amount", FieldKind::Number),
            field("id", FieldKind::Text),
            field("it's \"odd\"", FieldKind::Text),
            field(r"back\slash\'", FieldKind::Text),
            field(&"x".repeat(64), FieldKind::Text),
            field("closedate", FieldKind::DateTime),
        ]);
        let (sql, left_out) = create_sql("t", "v", &schema, true);
        assert_eq!(left_out, 1);
        assert!(sql.starts_with("CREATE OR REPLACE VIEW v AS SELECT id,"));
        assert!(sql.contains(r#"weld.to_numeric(properties ->> E'amount') AS "amount""#));
        assert!(sql.contains(r#"weld.to_timestamptz(properties ->> E'closedate') AS "closedate""#));
        assert!(sql.contains(r#"properties ->> E'id' AS "property_id""#));
        assert!(sql.contains(r#"properties ->> E'it''s "odd"' AS "it's ""odd""""#));
        assert!(sql.contains(r#"properties ->> E'back\\slash\\''' AS "back\slash\'""#));
        assert!(sql.ends_with("FROM t"));
    }
}
