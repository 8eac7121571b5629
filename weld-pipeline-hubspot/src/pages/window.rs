//! The incremental window: the records modified in `[from, until]` through search, filtered on
//! the change-tracking property, sorted by id and re-anchored after the last id committed
//! (`Window`), so any number of records on one timestamp arrives exactly once; then those
//! archived in the window, through the archived listing (`WindowArchived`): archiving does not
//! move a modification time, and search never returns archived records.

use serde_json::json;
use weld_pipeline::source::Page;
use weld_pipeline::BoxError;

use super::reader::{page, Reader};
use crate::position::Position;
use crate::properties::PropertySet;

/// An incremental window: modification times `[from, until]`, and when the last full read and
/// the last sweep began.
#[derive(Clone, Copy)]
pub(super) struct Window {
    pub(super) from: i64,
    pub(super) until: i64,
    pub(super) full_at: i64,
    pub(super) swept_at: i64,
}

impl Reader {
    /// One page of a window: the records modified in it after `last_id`, by id.
    pub(super) async fn window_page(
        &self,
        window: Window,
        last_id: u64,
        set: &PropertySet,
        properties: u64,
    ) -> Result<Page, BoxError> {
        let Window {
            from,
            until,
            full_at,
            swept_at,
        } = window;
        let modified = self.object.modified_property();
        let (listed, last) = self
            .search(
                vec![
                    json!({"propertyName": modified, "operator": "GTE", "value": from.to_string()}),
                    json!({"propertyName": modified, "operator": "LTE", "value": until.to_string()}),
                ],
                last_id,
                set,
                self.archived_first_calls(set).await?,
            )
            .await?;
        // The window ends when a page comes back with nothing after it.
        let next = match last {
            Some(last_id) => Position::Window {
                from,
                until,
                last_id,
                properties,
                full_at,
                swept_at,
            },
            None => Position::WindowArchived {
                from,
                until,
                after: None,
                properties,
                full_at,
                swept_at,
            },
        };
        page(listed.records, &next)
    }

    /// One page of the window's archived pass, from `after`: the records archived in it.
    pub(super) async fn window_archived_page(
        &self,
        window: Window,
        after: Option<String>,
        set: &PropertySet,
        properties: u64,
    ) -> Result<Page, BoxError> {
        let Window {
            from,
            until,
            full_at,
            swept_at,
        } = window;
        let listed = self.archived_page(after, set, Some((from, until))).await?;
        let next = match listed.next {
            Some(after) => Position::WindowArchived {
                from,
                until,
                after: Some(after),
                properties,
                full_at,
                swept_at,
            },
            None => Position::Done {
                until,
                properties,
                full_at,
                swept_at,
            },
        };
        page(listed.records, &next)
    }
}
