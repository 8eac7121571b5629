//! The full read: every live record through search, sorted by id and re-anchored after the
//! last id read (`Full`), then every archived record through the archived listing
//! (`FullArchived`). Its end is a checkpoint at the time it started, less the settle delay.

use weld_pipeline::source::Page;
use weld_pipeline::BoxError;

use super::reader::{page, Reader};
use crate::position::Position;
use crate::properties::PropertySet;

impl Reader {
    /// One page of the live pass, after id `last_id`, of a full read started at `started_at`.
    pub(super) async fn full_page(
        &self,
        last_id: u64,
        started_at: i64,
        set: &PropertySet,
        properties: u64,
    ) -> Result<Page, BoxError> {
        let archived = self.archived_first_calls(set).await?;
        let (listed, last) = self.search(vec![], last_id, set, archived).await?;
        let next = match last {
            Some(last_id) => Position::Full {
                last_id,
                started_at,
                properties,
            },
            None => Position::FullArchived {
                after: None,
                started_at,
                properties,
            },
        };
        page(listed.records, &next)
    }

    /// One page of the archived pass, from `after`, of a full read started at `started_at`.
    pub(super) async fn full_archived_page(
        &self,
        after: Option<String>,
        started_at: i64,
        set: &PropertySet,
        properties: u64,
    ) -> Result<Page, BoxError> {
        let listed = self.archived_page(after, set, None).await?;
        let next = match listed.next {
            Some(after) => Position::FullArchived {
                after: Some(after),
                started_at,
                properties,
            },
            None => Position::Done {
                until: self.settle(started_at),
                properties,
                full_at: started_at,
                // A full read repairs all but what vanished: the next sweep is a day on.
                swept_at: started_at,
            },
        };
        page(listed.records, &next)
    }
}
