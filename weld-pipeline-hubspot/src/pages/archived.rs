//! The archived listing (`archived=true`: search never returns archived records), as the full
//! read and the incremental windows page through it after their live records.

use weld_pipeline::BoxError;

use super::reader::Reader;
use crate::client::Call;
use crate::lookahead::beside;
use crate::parse::{parse, Listed};
use crate::properties::PropertySet;

impl Reader {
    /// The calls of the archived listing's first page (see [`Reader::archived_page`]).
    pub(super) async fn archived_first_calls(
        &self,
        set: &PropertySet,
    ) -> Result<Vec<Call>, BoxError> {
        self.list_calls(true, None, set).await
    }

    /// One page of the archived listing, with every property of `set`: of the records archived
    /// in `within` (`[from, until)`), or all of them. HubSpot's archived listing has no filter,
    /// so a run pages through every archived record the account holds. When the property list
    /// fits one list URL, a page is one call. When it would be split (hundreds of properties:
    /// a part per 2,000 bytes of URL), the first page is still read whole, its parts sent
    /// ahead with the last search page (most listings have one page: no round trip is added);
    /// every later page lists the ids only, in one call, and reads the records it wants by
    /// batch read, the properties in the body, 100 a call: in a window, most often none.
    pub(super) async fn archived_page(
        &self,
        after: Option<String>,
        set: &PropertySet,
        within: Option<(i64, i64)>,
    ) -> Result<Listed, BoxError> {
        let wanted = |archived_at: &Option<i64>| {
            within.is_none_or(|(from, until)| {
                archived_at.is_none_or(|at| (from..until).contains(&at))
            })
        };
        if after.is_none() || self.list_calls(true, after.clone(), set).await?.len() == 1 {
            let mut listed = self.list_page(true, after, set).await?;
            listed
                .records
                .retain(|(_, archived_at)| wanted(archived_at));
            return Ok(listed);
        }
        let call = self.archived_ids_call(after).await?;
        let listed = parse(&self.lookahead.call(&self.calls.list, call).await?)?;
        let mut ahead = match &listed.next {
            Some(next) => self.ahead(vec![self.archived_ids_call(Some(next.clone())).await?]),
            None => Vec::new(),
        };
        let ids: Vec<u64> = listed
            .records
            .iter()
            .filter(|(_, archived_at)| wanted(archived_at))
            .filter_map(|(record, _)| record.id.parse().ok())
            .collect();
        let records = if ids.is_empty() {
            beside(&mut ahead, std::future::ready(())).await;
            Vec::new()
        } else {
            beside(&mut ahead, self.read_by_id(true, &ids, set)).await?
        };
        self.lookahead.keep(ahead);
        Ok(Listed {
            records: records.into_iter().map(|record| (record, None)).collect(),
            next: listed.next,
            merges: Vec::new(),
            total: None,
        })
    }
}
