//! A source of generated, HubSpot-contact-shaped records, for demos, benchmarks and tests.

use std::future::{ready, Ready};
use std::task::{Context, Poll};

use serde::Serialize;
use tower::Service;

use super::{Page, PageRequest};
use crate::checkpoint::Checkpoint;
use crate::error::{BoxError, Error};
use crate::record::{Json, Record, Timestamp};

/// Generates `count` contact records, deterministically, a page at a time.
///
/// Record `i` (from 1) has id `i`, an `updatedAt` one second after record `i - 1`'s except that
/// every group of 5 shares one timestamp (sources must cope with ties), and a body shaped like a
/// HubSpot contact, padded to roughly `record_bytes`. The cursor is the last id served, so a run
/// resumed from any checkpoint continues exactly where it left off.
///
/// It is a `Service<PageRequest>`: wrap it in layers like any real page fetcher, and turn it into
/// a [`Source`](super::Source) with [`Pages`](super::Pages).
#[derive(Clone, Debug)]
pub struct Generator {
    count: u64,
    page_size: u64,
    record_bytes: usize,
    base: Timestamp,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Contact<'a> {
    id: String,
    properties: Properties<'a>,
    created_at: String,
    updated_at: String,
    archived: bool,
}

#[derive(Serialize)]
struct Properties<'a> {
    createdate: String,
    email: String,
    firstname: &'a str,
    lastname: &'a str,
    hs_object_id: String,
    lastmodifieddate: String,
    notes: &'a str,
}

const FIRST_NAMES: [&str; 8] = [
    "Lorelai", "Rory", "Luke", "Sookie", "Paris", "Jess", "Emily", "Richard",
];
const LAST_NAMES: [&str; 6] = [
    "Gilmore",
    "Danes",
    "St. James",
    "Geller",
    "Mariano",
    "Hayden",
];

impl Generator {
    /// `count` contacts, served 100 to a page, about 1 KiB each.
    pub fn contacts(count: u64) -> Self {
        Generator {
            count,
            page_size: 100,
            record_bytes: 1024,
            base: Timestamp::from_millis(1_700_000_000_000),
        }
    }

    /// Records per page (at least 1).
    pub fn page_size(mut self, page_size: u64) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Approximate size of each record's JSON, in bytes.
    pub fn record_bytes(mut self, record_bytes: usize) -> Self {
        self.record_bytes = record_bytes;
        self
    }

    /// The record with id `i` (1-based), exactly as a page serves it.
    pub fn record(&self, i: u64) -> Record {
        let updated_at = Timestamp::from_millis(self.base.as_millis() + (i / 5) as i64 * 1000);
        let stamp = updated_at.to_string();
        let first = FIRST_NAMES[(i % FIRST_NAMES.len() as u64) as usize];
        let last = LAST_NAMES[(i % LAST_NAMES.len() as u64) as usize];
        let padding = "x".repeat(self.record_bytes.saturating_sub(340));
        let contact = Contact {
            id: i.to_string(),
            properties: Properties {
                createdate: self.base.to_string(),
                email: format!("{}.{i}@example.com", first.to_lowercase()),
                firstname: first,
                lastname: last,
                hs_object_id: i.to_string(),
                lastmodifieddate: stamp.clone(),
                notes: &padding,
            },
            created_at: self.base.to_string(),
            updated_at: stamp,
            archived: false,
        };
        // A struct of strings always serializes.
        let data = Json::from_serialize(&contact).expect("contact serializes");
        Record::new(i.to_string(), updated_at, data)
    }

    fn page(&self, cursor: &Checkpoint) -> Result<Page, Error> {
        let after: u64 = cursor.position()?.unwrap_or(0);
        let end = after.saturating_add(self.page_size).min(self.count);
        let records = (after + 1..=end).map(|i| self.record(i)).collect();
        Ok(Page {
            records,
            cursor: Checkpoint::from_position(&end)?,
            last: end >= self.count,
            repaired: 0,
        })
    }
}

impl Service<PageRequest> for Generator {
    type Response = Page;
    type Error = BoxError;
    type Future = Ready<Result<Page, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: PageRequest) -> Self::Future {
        ready(self.page(&request.cursor).map_err(Into::into))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Pages, RunContext, Source};
    use crate::stream::StreamName;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn generator_pages_cover_every_record_once_and_resume_from_a_cursor() {
        let source = Pages::new(Generator::contacts(250).page_size(100));
        let run = RunContext::new(StreamName::new("contacts").unwrap());
        let batches: Vec<_> = source
            .batches(&run, Checkpoint::start())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches.iter().map(|b| b.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(batches.iter().filter(|b| b.last).count(), 1);
        let ids: Vec<_> = batches
            .iter()
            .flat_map(|b| &b.records)
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(ids, (1..=250).map(|i| i.to_string()).collect::<Vec<_>>());

        let resumed: Vec<_> = source
            .batches(&run, batches[0].cursor.clone())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(resumed[0].records[0].id, "101");
    }

    #[test]
    fn generated_records_are_valid_json_of_about_the_requested_size() {
        let record = Generator::contacts(10).record(3);
        assert!(Json::parse(record.data.to_bytes()).is_ok());
        assert!(
            (900..1200).contains(&record.data.len()),
            "{}",
            record.data.len()
        );
    }
}

/// The parameters of a `generator` source in a stream's configuration:
/// `{"kind":"generator","records":100000,"page_size":100,"record_bytes":1024}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorParams {
    /// Records a full run serves. Default 1,000.
    #[serde(default = "GeneratorParams::default_records")]
    pub records: u64,
    /// Records per page, 1..=10,000. Default 100.
    #[serde(default = "GeneratorParams::default_page_size")]
    pub page_size: u64,
    /// Approximate size of each record's JSON, up to 1 MiB. Default 1,024.
    #[serde(default = "GeneratorParams::default_record_bytes")]
    pub record_bytes: usize,
}

impl GeneratorParams {
    /// The most records one stream may generate: a billion keeps any test or demo finite.
    pub const MAX_RECORDS: u64 = 1_000_000_000;

    fn default_records() -> u64 {
        1_000
    }

    fn default_page_size() -> u64 {
        100
    }

    fn default_record_bytes() -> usize {
        1024
    }

    /// Reads and checks the parameters of a `generator` spec.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for an unknown parameter or a value out of range.
    pub fn from_spec(spec: &super::SourceSpec) -> Result<Self, Error> {
        let params: GeneratorParams =
            serde_json::from_value(serde_json::Value::Object(spec.params.clone()))
                .map_err(|e| Error::Invalid(format!("generator source: {e}")))?;
        if params.records > Self::MAX_RECORDS
            || !(1..=10_000).contains(&params.page_size)
            || params.record_bytes > 1024 * 1024
        {
            return Err(Error::Invalid(format!(
                "generator source: records must be at most {}, page_size 1 to 10000, record_bytes \
                 at most 1048576",
                Self::MAX_RECORDS
            )));
        }
        Ok(params)
    }

    /// The generator these parameters describe.
    pub fn generator(&self) -> Generator {
        Generator::contacts(self.records)
            .page_size(self.page_size)
            .record_bytes(self.record_bytes)
    }
}

/// The `generator` source kind: generated contacts (see [`Generator`]), for demos, benchmarks and
/// end-to-end tests of a whole service without an external API. Register it in both services to
/// start `{"source":{"kind":"generator","records":100000}}` streams.
#[derive(Clone, Copy, Debug, Default)]
pub struct GeneratorSources;

impl super::SourceKind for GeneratorSources {
    fn kind(&self) -> &str {
        "generator"
    }

    fn check(&self, spec: &super::SourceSpec) -> Result<super::SourceSpec, Error> {
        let params = GeneratorParams::from_spec(spec)?;
        let serde_json::Value::Object(params) = serde_json::to_value(params)
            .map_err(|e| Error::Bug(format!("generator parameters do not encode: {e}")))?
        else {
            return Err(Error::Bug("generator parameters are not an object".into()));
        };
        Ok(super::SourceSpec {
            kind: spec.kind.clone(),
            params,
        })
    }

    fn params_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "records": {"type": "integer", "minimum": 0, "maximum": GeneratorParams::MAX_RECORDS,
                    "description": "Records a full run serves. Default 1000."},
                "page_size": {"type": "integer", "minimum": 1, "maximum": 10_000,
                    "description": "Records per page. Default 100."},
                "record_bytes": {"type": "integer", "minimum": 0, "maximum": 1024 * 1024,
                    "description": "Approximate size of each record's JSON. Default 1024."},
            },
            "additionalProperties": false,
        })
    }
}

impl super::SourceFactory for GeneratorSources {
    fn source(
        &self,
        _stream: &crate::stream::StreamName,
        spec: &super::SourceSpec,
    ) -> Result<std::sync::Arc<dyn super::Source>, Error> {
        let generator = GeneratorParams::from_spec(spec)?.generator();
        Ok(std::sync::Arc::new(super::Pages::new(generator)))
    }
}
