//! Reference data a stream can read instead of CRM records: `owners` (page by page, live then
//! archived) and `pipelines:<objectType>` (one call). Each run reads it whole: it is small, and
//! has no change tracking to search on.

use tower::ServiceExt;
use weld_pipeline::source::Page;
use weld_pipeline::BoxError;

use super::reader::{page, Reader};
use crate::client::Call;
use crate::parse::parse;
use crate::position::Position;

/// Reference data a stream can read instead of CRM records: `owners`, or
/// `pipelines:<objectType>`.
pub(super) enum Reference {
    Owners,
    Pipelines(String),
}

impl Reference {
    /// The reference data `object` names, if it names some.
    pub(super) fn of(object: &str) -> Option<Reference> {
        if object == "owners" {
            return Some(Reference::Owners);
        }
        object
            .strip_prefix("pipelines:")
            .map(|object_type| Reference::Pipelines(object_type.to_string()))
    }
}

impl Reader {
    /// One page of reference data, from `at`.
    pub(super) async fn reference_page(
        &self,
        reference: Reference,
        at: Option<Position>,
        now: i64,
    ) -> Result<Page, BoxError> {
        let (archived, after) = match at {
            Some(Position::Reference { archived, after }) => (archived, after),
            _ => (false, None),
        };
        let done = Position::Done {
            until: now,
            properties: 0,
            full_at: 0,
            swept_at: 0,
        };
        let (listed, next) = match reference {
            Reference::Owners => {
                let call = Call::Owners {
                    archived,
                    after: after.clone(),
                };
                let listed = parse(&self.calls.meta.clone().oneshot(call).await?)?;
                let next = match (&listed.next, archived) {
                    (Some(after), _) => Position::Reference {
                        archived,
                        after: Some(after.clone()),
                    },
                    (None, false) => Position::Reference {
                        archived: true,
                        after: None,
                    },
                    (None, true) => done,
                };
                (listed, next)
            }
            Reference::Pipelines(object_type) => {
                let call = Call::Pipelines {
                    object_type: object_type.into(),
                };
                (parse(&self.calls.meta.clone().oneshot(call).await?)?, done)
            }
        };
        page(listed.records, &next)
    }
}
