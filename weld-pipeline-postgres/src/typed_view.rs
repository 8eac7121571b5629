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
//! `_weld_run_id`, `_weld_synced_at`), then the properties by name.
//!
//! # Column names
//!
//! A property's column is named by one rule, which never gives two columns one name:
//!
//! | property name | column |
//! |---|---|
//! | empty | `property_` |
//! | one of the table's own columns (`id`, `updated_at`, ...) | `property_<name>` (`property_id`) |
//! | starting with `property_` | `property_<name>` (`property_property_id`) |
//! | any other | the name as it is, case and all |
//!
//! A renamed column starts with `property_` and a column kept as its name does not, so the two
//! never meet, and none of the table's columns starts with `property_`. Left out of the view
//! (they stay in `properties`): a property whose column would pass PostgreSQL's 63-byte
//! identifiers (PostgreSQL would cut it, and two cut names could meet), one whose name holds a
//! NUL, a name already seen (a schema is sent deduplicated; this holds whatever arrives), and
//! those past 1,500 columns.
//!
//! Property names are written by a portal's users: each reaches the statement only through
//! [`sql::identifier`] and [`sql::literal`], and the statement runs alone on the extended
//! protocol (see [`sql`]).

use std::collections::HashSet;

use weld_pipeline::source::{Field, FieldKind, Schema};

use crate::sql;

/// The table's own columns, first in the view.
pub(crate) const COLUMNS: [&str; 7] = [
    "id",
    "updated_at",
    "created_at",
    "archived",
    "archived_at",
    "_weld_run_id",
    "_weld_synced_at",
];

/// What a renamed property's column starts with.
const PREFIX: &str = "property_";

/// PostgreSQL's longest identifier, in bytes (`NAMEDATALEN - 1`); it cuts longer ones.
const MAX_NAME: usize = 63;

/// The most property columns a view gets: PostgreSQL's limit is 1,664 entries.
pub(crate) const MAX_COLUMNS: usize = 1_500;

/// The column of the property `name` by the rule of the module doc, or `None` when it gets
/// none (too long once renamed, or a NUL).
pub(crate) fn column_of(name: &str) -> Option<String> {
    let column = if name.is_empty() || COLUMNS.contains(&name) || name.starts_with(PREFIX) {
        format!("{PREFIX}{name}")
    } else {
        name.to_string()
    };
    (column.len() <= MAX_NAME && !column.contains('\0')).then_some(column)
}

/// The properties of `schema` the view shows, each with its column, in order; and how many
/// it leaves out.
pub(crate) fn property_columns(schema: &Schema) -> (Vec<(String, &Field)>, usize) {
    let mut named = HashSet::new();
    let mut shown = Vec::new();
    let mut left_out = 0;
    for field in &schema.fields {
        match column_of(&field.name) {
            Some(column) if shown.len() < MAX_COLUMNS && named.insert(column.clone()) => {
                shown.push((column, field));
            }
            _ => left_out += 1,
        }
    }
    (shown, left_out)
}

/// The statement that makes (or replaces) the typed view of `table` as `view` (both quoted),
/// and how many properties it left out.
pub(crate) fn create_sql(
    table: &str,
    view: &str,
    schema: &Schema,
    replace: bool,
) -> (String, usize) {
    let (shown, mut left_out) = property_columns(schema);
    let mut columns: Vec<String> = COLUMNS.iter().map(|c| (*c).to_string()).collect();
    for (column, field) in shown {
        // Neither holds a NUL (`column_of` refused it): both quote.
        let (Ok(name), Ok(key)) = (sql::identifier(&column), sql::literal(&field.name)) else {
            left_out += 1;
            continue;
        };
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
    use proptest::prelude::*;

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

    #[test]
    fn a_property_named_like_a_table_column_empty_or_prefixed_is_renamed_apart() {
        for base in COLUMNS {
            assert_eq!(column_of(base).unwrap(), format!("property_{base}"));
            let prefixed = format!("property_{base}");
            assert_eq!(
                column_of(&prefixed).unwrap(),
                format!("property_{prefixed}")
            );
        }
        assert_eq!(column_of("").unwrap(), "property_");
        assert_eq!(column_of("property_").unwrap(), "property_property_");
        for kept in [
            "property",
            "ID",
            "Property_id",
            "properties",
            "data",
            "email",
        ] {
            assert_eq!(column_of(kept).unwrap(), kept);
        }
        // 63 bytes is the most a column may have, once renamed.
        assert_eq!(column_of(&"x".repeat(63)).unwrap().len(), 63);
        assert_eq!(column_of(&"x".repeat(64)), None);
        let prefixed = |n| format!("property_{}", "x".repeat(n));
        assert_eq!(column_of(&prefixed(45)).unwrap().len(), 63);
        assert_eq!(column_of(&prefixed(46)), None);
        assert_eq!(column_of("a\0b"), None);
    }

    #[test]
    fn a_repeated_name_is_shown_once_and_the_view_stops_at_its_most_columns() {
        let repeated = Schema {
            fields: vec![field("a", FieldKind::Text), field("a", FieldKind::Number)],
        };
        let (shown, left_out) = property_columns(&repeated);
        assert_eq!((shown.len(), left_out), (1, 1));
        assert_eq!(shown[0].1.kind, FieldKind::Text);
        let many =
            Schema::new((0..MAX_COLUMNS + 3).map(|i| field(&format!("p{i}"), FieldKind::Text)));
        let (shown, left_out) = property_columns(&many);
        assert_eq!((shown.len(), left_out), (MAX_COLUMNS, 3));
    }

    fn kind() -> impl Strategy<Value = FieldKind> {
        (0u8..6).prop_map(|code| FieldKind::from_code(code).unwrap())
    }

    /// Names near the rule's edges (table columns, the prefix, both repeated) and any text.
    fn name() -> impl Strategy<Value = String> {
        let parts = prop::sample::select(vec![
            "",
            "id",
            "updated_at",
            "archived",
            "_weld_run_id",
            "property_",
            "property",
            "_",
            "\"",
            "'",
            "\\",
            "é",
            "ID",
            "\0",
        ]);
        prop_oneof![
            prop::collection::vec(parts, 0..5).prop_map(|parts| parts.concat()),
            ".{0,70}",
        ]
    }

    proptest! {
        #[test]
        fn no_two_columns_of_a_view_share_a_name(
            fields in prop::collection::vec((name(), kind()), 0..40),
        ) {
            // A schema as a worker may send it: unsorted, names repeated.
            let schema = Schema {
                fields: fields.iter().map(|(name, kind)| field(name, *kind)).collect(),
            };
            let (shown, left_out) = property_columns(&schema);
            prop_assert_eq!(shown.len() + left_out, schema.fields.len());
            let mut seen: HashSet<&str> = COLUMNS.into_iter().collect();
            for (column, _) in &shown {
                prop_assert!(seen.insert(column), "{:?} is there twice", column);
                prop_assert!(!column.is_empty() && column.len() <= 63 && !column.contains('\0'));
            }
            // Every name that can have a column has one: none is lost to another's.
            let mut names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            let columned = names.iter().filter(|n| column_of(n).is_some()).count();
            prop_assert_eq!(shown.len(), columned);
            // The statement shows what `property_columns` shows.
            let (_, statement_left_out) = create_sql("t", "v", &schema, false);
            prop_assert_eq!(statement_left_out, left_out);
        }
    }
}
