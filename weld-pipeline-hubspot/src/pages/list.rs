//! A list page (`GET /crm/v3/objects/{type}`): one call, or, when the property list would make
//! its URL too long, one call per part of the list, merged by id (see `split`); and the list
//! call of a page of archived ids.

use weld_pipeline::BoxError;

use super::reader::Reader;
use crate::client::{Call, Client};
use crate::lookahead::{beside, Ahead};
use crate::parse::{parse, Listed};
use crate::properties::PropertySet;
use crate::split::{self, Merged};

impl Reader {
    /// The calls of one list page: one, or its property list split across several when the
    /// URL would be too long, each asking for the same page (see `split`).
    pub(super) async fn list_calls(
        &self,
        archived: bool,
        after: Option<String>,
        set: &PropertySet,
    ) -> Result<Vec<Call>, BoxError> {
        let properties = set.names().to_vec();
        let object_type = self.object_type().await?;
        let url = |properties: &[String]| {
            Client::list_url(
                &self.account,
                &object_type,
                archived,
                after.as_deref(),
                properties,
            )
            .len()
        };
        let parts = if url(&properties) <= self.account.max_url_bytes {
            vec![properties]
        } else {
            let room = self
                .account
                .max_url_bytes
                .saturating_sub(url(&[]) + 12)
                .max(64);
            split::parts(properties, room)
        };
        Ok(parts
            .into_iter()
            .map(|properties| Call::List {
                object_type: object_type.clone(),
                archived,
                after: after.clone(),
                properties,
            })
            .collect())
    }

    /// The list call of a page of archived ids (and their archive times), from `after`.
    pub(super) async fn archived_ids_call(&self, after: Option<String>) -> Result<Call, BoxError> {
        Ok(Call::List {
            object_type: self.object_type().await?,
            archived: true,
            after,
            properties: vec!["hs_object_id".into()],
        })
    }

    /// One list page. Its first call decides the page; the other parts of a split property list
    /// then go out together, and, when the first answer names a next page, that page's calls
    /// are sent ahead beside them (see `lookahead`).
    pub(super) async fn list_page(
        &self,
        archived: bool,
        after: Option<String>,
        set: &PropertySet,
    ) -> Result<Listed, BoxError> {
        let mut parts = self.list_calls(archived, after, set).await?;
        let next_page = |next: &str| -> Vec<Call> {
            parts
                .iter()
                .map(|call| match call {
                    Call::List {
                        object_type,
                        archived,
                        properties,
                        ..
                    } => Call::List {
                        object_type: object_type.clone(),
                        archived: *archived,
                        after: Some(next.to_string()),
                        properties: properties.clone(),
                    },
                    other => other.clone(),
                })
                .collect()
        };
        let mut ahead = Vec::new();
        let body = self
            .lookahead
            .call(&self.calls.list, parts[0].clone())
            .await?;
        if parts.len() == 1 {
            // One part: the records stay the bytes HubSpot sent.
            let listed = parse(&body)?;
            if let Some(next) = &listed.next {
                ahead = self.send_ahead(next_page(next)).await;
            }
            self.lookahead.keep(ahead);
            return Ok(listed);
        }
        let mut merged = Merged::default();
        merged.add(&body)?;
        if merged.is_empty() {
            // The first part decides which records are on the page: none, no more parts
            // (what was sent of them ahead is dropped).
            self.lookahead.keep([]);
            return merged.into_listed();
        }
        if let Some(next) = merged.next() {
            ahead = next_page(next)
                .into_iter()
                .map(|call| Ahead::start(&self.calls.list, call))
                .collect();
        }
        let rest = parts
            .split_off(1)
            .into_iter()
            .map(|call| self.lookahead.call(&self.calls.list, call));
        let bodies = beside(&mut ahead, futures::future::try_join_all(rest)).await?;
        for body in &bodies {
            merged.add(body)?;
        }
        self.lookahead.keep(ahead);
        merged.into_listed()
    }
}
