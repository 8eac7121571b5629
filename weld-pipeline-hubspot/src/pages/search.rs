//! A search page, as the full read's live pass and the incremental windows read it: sorted by
//! id, re-anchored after the last id read, every property in the body, links read beside it,
//! the next page's search sent as soon as this one's answer names its last id.

use serde_json::Value;
use weld_pipeline::BoxError;

use super::reader::Reader;
use crate::calls::search_after;
use crate::client::Call;
use crate::lookahead::beside;
use crate::parse::{parse, Listed};
use crate::properties::PropertySet;

impl Reader {
    /// One search page: the records matching `filters` after id `after`, by id, with every
    /// property of `set` (in the body: no URL limit), 200 a page. The last id on it, if more may
    /// follow: the next page re-anchors there instead of paging by offset, so no query reaches
    /// the 10,000-result cap. That next page's search is sent as soon as this one's answer is
    /// in, beside the reading of its associations (see `lookahead`); and the calls `then`
    /// that follow the last page, with the last page or, when the search's `total` says the
    /// next page is the last, with this one.
    pub(super) async fn search(
        &self,
        filters: Vec<Value>,
        after: u64,
        set: &PropertySet,
        then: Vec<Call>,
    ) -> Result<(Listed, Option<u64>), BoxError> {
        let object_type = self.object_type().await?;
        let call = |after: u64| Call::Search {
            object_type: object_type.clone(),
            body: search_after(
                filters.clone(),
                after,
                set.names().into(),
                self.account.search_limit,
            ),
        };
        let answer = self.lookahead.call(&self.calls.search, call(after)).await?;
        let mut listed = parse(&answer)?;
        let last = listed
            .records
            .iter()
            .filter_map(|(r, _)| r.id.parse::<u64>().ok())
            .max();
        let more = listed.next.is_some();
        // When the next page is the last, what follows it is sent ahead too.
        let next = match last {
            Some(last) if more => {
                let limit = u64::from(self.account.search_limit);
                let mut next = vec![call(last)];
                if listed.total.is_some_and(|total| total <= 2 * limit) {
                    next.extend(then);
                }
                next
            }
            _ => then,
        };
        // The next calls are sent, or wait for their turn after this page's own.
        let mut ahead = self.ahead(next);
        let linking = self.attach_links(&object_type, &mut listed.records);
        beside(&mut ahead, linking).await?;
        self.lookahead.keep(ahead);
        // The records merged into those of the page are archived with `merged_into` (after the
        // last id is taken: theirs are not positions in this listing).
        let merged: Vec<_> = listed
            .merges
            .iter()
            .map(|m| (m.amendment(), None))
            .collect();
        listed.records.extend(merged);
        Ok((listed, last.filter(|_| more)))
    }
}
