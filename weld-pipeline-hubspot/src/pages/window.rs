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

/// An incremental window: modification times `[from, until]`, the fingerprint of the property
/// set it is read with, and when the last full read and the last sweep began.
#[derive(Clone, Copy)]
pub(super) struct Window {
    from: i64,
    until: i64,
    properties: u64,
    full_at: i64,
    swept_at: i64,
}

impl Window {
    /// The window a `Window` or `WindowArchived` position stands in, read with the property
    /// set of fingerprint `properties`.
    pub(super) fn of(at: &Position, properties: u64) -> Option<Window> {
        match *at {
            Position::Window {
                from,
                until,
                full_at,
                swept_at,
                ..
            }
            | Position::WindowArchived {
                from,
                until,
                full_at,
                swept_at,
                ..
            } => Some(Window {
                from,
                until,
                properties,
                full_at,
                swept_at,
            }),
            _ => None,
        }
    }

    /// Its search, after id `last_id`.
    fn searching(self, last_id: u64) -> Position {
        Position::Window {
            from: self.from,
            until: self.until,
            last_id,
            properties: self.properties,
            full_at: self.full_at,
            swept_at: self.swept_at,
        }
    }

    /// Its archived pass, from `after`.
    fn archived(self, after: Option<String>) -> Position {
        Position::WindowArchived {
            from: self.from,
            until: self.until,
            after,
            properties: self.properties,
            full_at: self.full_at,
            swept_at: self.swept_at,
        }
    }

    /// Done: the next run's window starts at its end.
    fn done(self) -> Position {
        Position::Done {
            until: self.until,
            properties: self.properties,
            full_at: self.full_at,
            swept_at: self.swept_at,
        }
    }
}

impl Reader {
    /// One page of a window: the records modified in it after `last_id`, by id.
    pub(super) async fn window_page(
        &self,
        window: Window,
        last_id: u64,
        set: &PropertySet,
    ) -> Result<Page, BoxError> {
        let modified = self.object.modified_property();
        let (from, until) = (window.from.to_string(), window.until.to_string());
        let (listed, last) = self
            .search(
                vec![
                    json!({"propertyName": modified, "operator": "GTE", "value": from}),
                    json!({"propertyName": modified, "operator": "LTE", "value": until}),
                ],
                last_id,
                set,
                self.archived_first_calls(set).await?,
            )
            .await?;
        // The window ends when a page comes back with nothing after it.
        let next = match last {
            Some(last_id) => window.searching(last_id),
            None => window.archived(None),
        };
        page(listed.records, &next)
    }

    /// One page of the window's archived pass, from `after`: the records archived in it.
    pub(super) async fn window_archived_page(
        &self,
        window: Window,
        after: Option<String>,
        set: &PropertySet,
    ) -> Result<Page, BoxError> {
        let within = Some((window.from, window.until));
        let listed = self.archived_page(after, set, within).await?;
        let next = match listed.next {
            Some(after) => window.archived(Some(after)),
            None => window.done(),
        };
        page(listed.records, &next)
    }
}
