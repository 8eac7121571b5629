//! Record transforms: change, drop or hide records on their way from the source.
//!
//! A [`Transform`] changes one record at a time; the [`Pipeline`](crate::Pipeline) applies one
//! to every batch of a run, after the source and before the commit
//! ([`Pipeline::with_transform`](crate::Pipeline::with_transform)), and a worker applies each
//! stream's [`FieldTransform`] list that way. A stream's configuration carries the list, so
//! this module sits below the messages, beside the records it changes.
//!
//! Cost: a record's JSON is carried as bytes and never parsed after the source. Transforms on
//! the record's envelope (a filter on `id` or `archived`, a map on `updated_at`) keep it so. A
//! [`FieldTransform`] list (rename, drop, redact a field inside the JSON) must look inside: it
//! parses each record once, applies every field transform of the list, and writes it once. A
//! stream without field transforms pays nothing.

mod field;

pub use field::{FieldTransform, REDACTED};

use std::sync::Arc;

use crate::error::Error;
use crate::record::Record;

/// Changes records one at a time.
///
/// An implementation returns the record (changed or not), `None` to drop it, or an error when
/// the record cannot be transformed (the run then fails with it, as the record cannot be stored
/// as configured). It must be pure: the same record in gives the same result, since a batch may
/// be fetched again after a crash.
///
/// # Examples
///
/// Lower-casing ids:
///
/// ```
/// use weld_pipeline::{Error, Record};
/// use weld_pipeline::transform::Transform;
///
/// struct LowerIds;
///
/// impl Transform for LowerIds {
///     fn apply(&self, mut record: Record) -> Result<Option<Record>, Error> {
///         record.id.make_ascii_lowercase();
///         Ok(Some(record))
///     }
/// }
/// ```
pub trait Transform: Send + Sync + 'static {
    /// Transforms one record; `None` drops it.
    ///
    /// # Errors
    ///
    /// When the record cannot be transformed as configured.
    fn apply(&self, record: Record) -> Result<Option<Record>, Error>;

    /// Transforms every record of a list in place, keeping their order.
    ///
    /// # Errors
    ///
    /// The first record's error; the list is then left partly transformed and must not be used.
    fn apply_all(&self, records: &mut Vec<Record>) -> Result<(), Error> {
        let mut out = Vec::with_capacity(records.len());
        for record in records.drain(..) {
            if let Some(record) = self.apply(record)? {
                out.push(record);
            }
        }
        *records = out;
        Ok(())
    }
}

impl<T: Transform + ?Sized> Transform for Arc<T> {
    fn apply(&self, record: Record) -> Result<Option<Record>, Error> {
        (**self).apply(record)
    }
}

/// Applies transforms in order: a record dropped by one is not seen by the next.
impl Transform for Vec<Arc<dyn Transform>> {
    fn apply(&self, record: Record) -> Result<Option<Record>, Error> {
        let mut record = record;
        for transform in self {
            match transform.apply(record)? {
                Some(next) => record = next,
                None => return Ok(None),
            }
        }
        Ok(Some(record))
    }
}

/// A transform from a function of a record: `Map(|r| ...)`.
#[derive(Clone, Debug)]
pub struct Map<F>(pub F);

impl<F> Transform for Map<F>
where
    F: Fn(Record) -> Record + Send + Sync + 'static,
{
    fn apply(&self, record: Record) -> Result<Option<Record>, Error> {
        Ok(Some((self.0)(record)))
    }
}

/// A transform keeping only the records a predicate accepts: `Filter(|r| !r.archived)`.
///
/// A purge (a record whose `purge` is set) is archived too: a filter that drops archived
/// records drops the purges with them, and the store keeps what the source asked it to remove.
/// Let them through (`Filter(|r| r.purge || !r.archived)`) where the stream must keep no trace
/// of a deletion.
#[derive(Clone, Debug)]
pub struct Filter<F>(pub F);

impl<F> Transform for Filter<F>
where
    F: Fn(&Record) -> bool + Send + Sync + 'static,
{
    fn apply(&self, record: Record) -> Result<Option<Record>, Error> {
        Ok((self.0)(&record).then_some(record))
    }
}

#[cfg(test)]
mod tests;
