use std::sync::Arc;

use super::*;
use crate::record::{Json, Timestamp};

fn contact(id: &str, archived: bool) -> Record {
    let body = format!(
        r#"{{"id":"{id}","properties":{{"email":"a@example.com","notes":"long","phone":"555"}}}}"#
    );
    Record {
        id: id.into(),
        updated_at: Timestamp::from_millis(1),
        archived,
        amend: false,
        purge: false,
        data: Json::parse(body.into_bytes()).unwrap(),
    }
}

fn field(record: &Record, pointer: &str) -> Option<serde_json::Value> {
    record
        .data
        .decode::<serde_json::Value>()
        .unwrap()
        .pointer(pointer)
        .cloned()
}

#[test]
fn rename_drop_and_redact_change_the_named_fields_only() {
    let transforms = vec![
        FieldTransform::Rename {
            from: "/properties/email".into(),
            to: "/properties/mail".into(),
        },
        FieldTransform::Drop("/properties/notes".into()),
        FieldTransform::Redact("/properties/phone".into()),
    ];
    let record = transforms.apply(contact("1", false)).unwrap().unwrap();
    assert_eq!(field(&record, "/properties/email"), None);
    assert_eq!(
        field(&record, "/properties/mail"),
        Some("a@example.com".into())
    );
    assert_eq!(field(&record, "/properties/notes"), None);
    assert_eq!(field(&record, "/properties/phone"), Some(REDACTED.into()));
    assert_eq!(field(&record, "/id"), Some("1".into()));
}

#[test]
fn transforms_of_absent_fields_change_nothing() {
    let transforms = vec![
        FieldTransform::Drop("/properties/missing".into()),
        FieldTransform::Redact("/nowhere/at/all".into()),
        FieldTransform::Rename {
            from: "/properties/missing".into(),
            to: "/properties/other".into(),
        },
    ];
    let before = contact("1", false);
    let after = transforms.apply(before.clone()).unwrap().unwrap();
    assert_eq!(
        after.data.decode::<serde_json::Value>().unwrap(),
        before.data.decode::<serde_json::Value>().unwrap()
    );
}

#[test]
fn an_empty_field_list_leaves_the_bytes_untouched() {
    let before = contact("1", false);
    let after = Vec::<FieldTransform>::new()
        .apply(before.clone())
        .unwrap()
        .unwrap();
    assert_eq!(
        after.data.as_bytes().as_ptr(),
        before.data.as_bytes().as_ptr()
    );
}

#[test]
fn a_pointer_without_a_slash_is_a_clear_error() {
    let error = vec![FieldTransform::Drop("email".into())]
        .apply(contact("1", false))
        .unwrap_err();
    assert!(error.to_string().contains("JSON pointer"), "{error}");
}

#[test]
fn a_redaction_with_a_malformed_pointer_fails_instead_of_leaking() {
    let error = vec![FieldTransform::Redact("properties/phone".into())]
        .apply(contact("1", false))
        .unwrap_err();
    assert!(error.to_string().contains("JSON pointer"), "{error}");
}

#[test]
fn malformed_pointers_are_refused_when_a_config_is_read() {
    let refused = serde_json::from_str::<Vec<FieldTransform>>(r#"[{"redact":"properties/phone"}]"#);
    assert!(refused.is_err());
    let refused =
        serde_json::from_str::<Vec<FieldTransform>>(r#"[{"rename":{"from":"/a","to":"b"}}]"#);
    assert!(refused.is_err());
    let accepted =
        serde_json::from_str::<Vec<FieldTransform>>(r#"[{"redact":"/properties/phone"}]"#);
    assert_eq!(
        accepted.unwrap(),
        vec![FieldTransform::Redact("/properties/phone".into())]
    );
}

#[test]
fn map_and_filter_compose_in_order() {
    let chain: Vec<Arc<dyn Transform>> = vec![
        Arc::new(Filter(|r: &Record| !r.archived)),
        Arc::new(Map(|mut r: Record| {
            r.id = format!("hs-{}", r.id);
            r
        })),
    ];
    let mut records = vec![contact("1", false), contact("2", true), contact("3", false)];
    chain.apply_all(&mut records).unwrap();
    let ids: Vec<_> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["hs-1", "hs-3"]);
}
