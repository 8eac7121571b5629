//! The HubSpot connector of weld-pipeline: the source that talks to `api.hubapi.com`, and
//! ([`fake`], feature `fake`) a HubSpot stand-in that answers as the real API does, faults
//! included, to test it against. The two share no code: each is an oracle for the other, and
//! HubSpot's official Python client judges the fake in CI.
//!
//! A connector is a crate of its own: a worker that syncs HubSpot depends on this one beside the
//! core and a transport, and the next connector is a sibling crate shaped like it (a source
//! kind for data-streams, a factory of sources for workers, the source's pages behind the core's
//! layers).
//!
//! ```
//! use weld_pipeline_hubspot::{HubSpotAccount, HubSpotObject, Token};
//!
//! let account = HubSpotAccount::new("https://api.hubapi.com", Token::new("pat-..."));
//! let contacts = weld_pipeline_hubspot::source(account, HubSpotObject::new("contacts"))?;
//! # let _ = contacts;
//! # Ok::<_, weld_pipeline::Error>(())
//! ```
//!
//! # What a stream reads
//!
//! Any CRM object type: `contacts`, `companies`, `deals`, `tickets`, `products`, `line_items`,
//! `quotes`, `calls`, `emails`, `meetings`, `notes`, `tasks` (change tracking:
//! `lastmodifieddate` for contacts, `hs_lastmodifieddate` for the others), or a custom object
//! by its `objectTypeId` (`2-1234567`), its fully qualified name (`p1234567_cars`), both of
//! which URLs take as they are, or its name (`cars`), looked up once in the account's schemas
//! (`GET /crm-object-schemas/2026-03/schemas`).
//!
//! Or reference data, read whole on every run (it is small and has no change tracking to
//! search on), records upserted by id: `owners` (`GET /crm/owners/2026-03`, 100 a page, then
//! `archived=true` for the deactivated ones) and `pipelines:<objectType>` (`GET
//! /crm/pipelines/2026-03/{objectType}`, each pipeline with its stages: what a deal's `dealstage`
//! id means).
//!
//! # HubSpot's API versions
//!
//! HubSpot names its API versions by date since March 2026 (`2026-03`, `2026-09`: one every March
//! and September, each supported 18 months) and stops serving the numbered ones in 2027 (v4,
//! which associations use, on March 30; v1-v3 in September). The source calls a dated version,
//! [`ApiVersion::V2026_03`] by default ([`HubSpotAccount::api_version`]; the worker's
//! `HUBSPOT_API_VERSION`), or [`ApiVersion::V3`], the numbered paths, while HubSpot serves
//! them. The paths this page names are 2026-03's; [`ApiVersion::path`] gives every endpoint's
//! path in every version, from one table. The answers differ little: dated results carry a `url`
//! (and, after a write, an `objectWriteTraceId`), kept in the record's data as sent, and a link's
//! `toObjectId` may come as text; the source reads both.
//!
//! # How a stream is synced
//!
//! Each run first reads the object's **property definitions** (`GET
//! /crm/properties/2026-03/{objectType}`, one call) and asks for every property, custom ones
//! included, unless the stream lists its own ([`HubSpotObject::properties`]). When the set differs from
//! the one the stored records were read with, the run is a full sync.
//!
//! A **full sync** reads the live records through search, 200 a page with every property in the
//! body, sorted by `hs_object_id` and re-anchored after the last id read (`hs_object_id GT
//! last`): no URL limit, no 10,000-result cap, and the fewest calls per record of HubSpot's
//! read paths (half the list endpoint's 100 a page, at any number of properties; a list page
//! must split hundreds of properties across several URLs, and batch read needs a list of ids
//! first). Then it lists the archived ones (`archived=true`: search never returns them), 100 a
//! page. When the property list fits one list URL, each page is one call. When it would be
//! split (hundreds of properties), each page after the first lists the archived ids only, in
//! one call, and batch reads the records with every property in the body, 100 a call: two
//! calls per 100 archived records instead of one per part. Its end is a checkpoint at the time the run started, minus
//! the settle delay.
//!
//! A full read **mirrors exactly**: with the store's inventory it compares each live page with
//! what the store holds over the same ids (no HubSpot call added), strikes out what the
//! archived listing names, and on its last page sends what remains as deleted for good (see
//! "Associations, merges, deletions"). So a resync ends with the store equal to HubSpot. A
//! full read resumed by a process that did not follow it from its start concludes nothing and
//! ends with `swept_at` 0: the next run is a sweep.
//!
//! Every later run is **incremental**, built to avoid what other connectors got wrong (runs that
//! loop on a page of equal timestamps, or skip records tied at a page boundary). Search takes one sort rule and promises no order among ties, so a cursor of
//! "the last modification time seen" cannot be made safe. Instead a run syncs a **window** of
//! modification times `[from, until]`, `until` being now minus the settle delay (the search
//! index trails writes), filtered on the change-tracking property and **sorted by
//! `hs_object_id`**. Each page re-anchors the query after the last id committed
//! (`hs_object_id GT last`) instead of paging on by offset, so no query ever reaches the 10,000
//! result cap, and any number of records on one timestamp arrives exactly once. Archiving does
//! not bump the modification date and archived records never appear in search, so the run
//! then lists `archived=true` and delivers those archived inside the window (with hundreds of
//! properties, past the first page the ids are listed and only those archived inside the
//! window are read). The checkpoint is
//! the window and the last id while the window is in progress, and the window's `until` once it
//! is done; the next run's window starts there.
//!
//! # Associations, merges, deletions
//!
//! A stream that asks for `associations` (`["companies","deals"]`) has each record carry its
//! links in `data.associations`, read per page through the associations batch read (the `associations`
//! module). Links change without moving a modification time, and so do the values of
//! properties HubSpot calculates (the definitions say `calculated: true`: rollups, days to
//! close, time in a stage), so a stream with associations or with a calculated property in its
//! read set also reads every record again once per [`HubSpotObject::refresh`] (stream setting
//! `refresh_secs`, a day by default); any run that reads a record reads it as it is.
//!
//! A merge keeps the primary record and names the merged-away ones in its
//! `hs_merged_object_ids`; they vanish from every listing. Each page's records that name some
//! send an amendment per merged id: archived, `"merged_into":"<primary>"`, the stored document
//! kept ([`Record::amend`](weld_pipeline::Record)).
//!
//! Records deleted for good (a GDPR delete, the recycle bin emptied) vanish from every listing
//! too, and records the store lost are never listed as changed again: once per
//! [`HubSpotObject::sweep_every`] a run is a reconciliation sweep (the `sweep` module) that
//! compares HubSpot's ids and modification times with the store's inventory and repairs the
//! difference; every full read compares the same way as it goes (the `full` module). A record
//! held live and found deleted for good becomes what [`HubSpotObject::on_permanent_delete`]
//! says: archived with `"deleted_permanently": true` (`archive`, the default: an amendment,
//! nothing stored is dropped), or removed with its links (`purge`, a
//! [`Record::purge`](weld_pipeline::Record::purge): what a privacy deletion asks of every
//! copy). A record held archived that HubSpot no longer lists at all (the recycle bin
//! emptied, a GDPR delete of an archived record) is removed too with `purge`, by a full read
//! whose property set reads `hs_merged_object_ids`: only such a read can tell it from a record
//! merged away (archived with `merged_into`, listed nowhere either), which is never purged.
//! With `archive` it stays as it is, archived: the inventory cannot tell one already marked,
//! and marking it again would repeat at every run. The sweep leaves such records alone in
//! both modes, as it cannot tell them from the merged.
//!
//! One page is one batch, its cursor the position after it. The page is parsed once here; each
//! record's JSON is kept as the bytes HubSpot sent (unless a long property list had to be split
//! across list requests, in which case the parts are merged by id and written once).
//!
//! # Reading ahead
//!
//! 150 ms from HubSpot (what a customer's cloud sees), a sync paged one request at a time waits
//! on every page and uses a third of its budget. So the fetcher sends the next page's calls as
//! soon as they are known (the `lookahead` module): the next search once this page's answer
//! names its last id, beside this page's association reads; a split list page's other parts
//! together, and the next page's beside them; the archived listing's first page while the
//! last search pages come in; and a run's first page on the property set the last run
//! discovered, beside the definitions that confirm it (read again with the new set when they
//! do not). A page takes a call read ahead only when it is the very call it would make, so
//! what a page holds and where its checkpoint stands are unchanged, and every call goes
//! through the same pacing: `cargo bench --bench hubspot_round_trip` measures 90-97% of the
//! records/s the budgets allow at 150 ms, with zero 429s.
//!
//! # Rate limits and errors
//!
//! Every call goes through the core's layers, outermost first: telemetry (`weld_calls_total` by
//! service, a call retried counting once), retry (transient errors only,
//! full-jitter backoff, `Retry-After` honoured up to 5 minutes), rate limit (list calls paced
//! from the `X-HubSpot-RateLimit-*` headers by a [`BudgetPacer`](weld_pipeline::middleware::BudgetPacer);
//! search calls by a token bucket under HubSpot's 5 per second), timeout. A `DAILY` 429 asks to
//! wait until midnight: longer than the retry layer waits, so the run fails with that error and
//! the next scheduled run tries again. 429 (other policies), 5xx, timeouts and resets are
//! retried; 400, 401, 403, 404, 414 and a page that does not parse fail the run at once.
//! A call retried a third time is told in the log once.
//!
//! A refusal's error (and so the stream's `last_error`) says what HubSpot said, read from
//! either of its error shapes, today's `{message, correlationId, category, subCategory,
//! context, errors[]}` or the rate limiter's `{status, message, errorType, correlationId,
//! policyName}`: `HubSpot answered 403 (MISSING_SCOPES, correlation id aeb5f871-...): <message;
//! its first details>`. The correlation id is what HubSpot's support asks for. The message is
//! cut at 500 characters, and the account's token, or anything after a `Bearer `, never
//! appears in it.
//!
//! # Bounds on what HubSpot sends
//!
//! | bound | default | checked | past it |
//! |---|---|---|---|
//! | [`HubSpotAccount::max_body_bytes`] | 64 MiB | on `Content-Length`, then as each chunk arrives | the call fails permanently ([`HubSpotError::TooLarge`], naming it) having read no more than the bound (held twice over only while a good answer is joined); the connection is dropped |
//! | [`HubSpotAccount::timeout`] | 30 s | over the whole call, body included | a timeout: retried |
//! | [`HubSpotAccount::max_properties`] | 4,000 | on the definitions of a stream that discovers its properties | the run fails before any page, saying to list the properties |
//!
//! A page larger than the transport carries in one message is no error: the worker's pipeline
//! cuts its batch in pieces that fit.

mod api_version;
mod associations;
mod calls;
mod client;
mod config;
mod error;
#[cfg(feature = "fake")]
pub mod fake;
mod limits;
mod lookahead;
mod pages;
mod parse;
mod position;
mod properties;
mod sources;
mod split;

pub use api_version::{ApiVersion, Endpoint};
pub use config::{
    HubSpotAccount, HubSpotObject, OnPermanentDelete, Token, MAX_BODY_BYTES,
    MAX_DISCOVERED_PROPERTIES, REFRESH, SWEEP_EVERY,
};
pub use error::HubSpotError;
pub use limits::AccountLimits;
pub use pages::HubSpotPages;
pub use position::{Position, SweepStage};
pub use sources::{HubSpotKind, HubSpotParams, HubSpotSources, KIND};

use weld_pipeline::source::Pages;
use weld_pipeline::Error;

/// The HubSpot source for one object type.
pub type HubSpotSource = Pages<HubSpotPages>;

/// Builds the HubSpot source of `object` in `account`, with rate limits of its own (streams of
/// one account share theirs through [`HubSpotSources`]).
///
/// # Errors
///
/// When the HTTP client cannot be built.
pub fn source(account: HubSpotAccount, object: HubSpotObject) -> Result<HubSpotSource, Error> {
    Ok(Pages::new(HubSpotPages::new(account, object)?))
}
