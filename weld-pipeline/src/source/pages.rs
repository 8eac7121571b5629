//! A source built from a service that fetches one page.

use futures::StreamExt;
use tower::{Service, ServiceExt};

use super::{BatchStream, Page, PageRequest, RunContext, Source};
use crate::batch::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::{BoxError, Error};

/// A [`Source`] that pages through a `Service<PageRequest, Response = Page>`.
///
/// Each page becomes one batch; the service is asked for the next page, from the cursor the
/// previous one reached, only once the previous batch was taken, and never after the run is
/// cancelled. Wrap the service in layers (rate limit, retry, timeout, transforms) before handing
/// it here.
///
/// # Examples
///
/// ```
/// use weld_pipeline::source::{Generator, Pages};
///
/// let source = Pages::new(Generator::contacts(1_000).page_size(100));
/// # let _ = source;
/// ```
#[derive(Clone, Debug)]
pub struct Pages<S> {
    service: S,
}

impl<S> Pages<S> {
    /// A source paging through `service`.
    pub fn new(service: S) -> Self {
        Pages { service }
    }
}

struct Paging<S> {
    service: S,
    run: RunContext,
    cursor: Checkpoint,
    seq: u64,
    done: bool,
}

impl<S> Source for Pages<S>
where
    S: Service<PageRequest, Response = Page> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send,
{
    fn batches(&self, run: &RunContext, from: Checkpoint) -> BatchStream {
        let state = Paging {
            service: self.service.clone(),
            run: run.clone(),
            cursor: from,
            seq: 0,
            done: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            if state.done || state.run.cancel.is_cancelled() {
                return None;
            }
            let request = PageRequest {
                stream: state.run.stream.clone(),
                cursor: state.cursor.clone(),
                inventory: state.run.inventory.clone(),
                catalog: state.run.catalog.clone(),
            };
            let page = match state.service.ready().await {
                Ok(service) => service.call(request).await,
                Err(error) => Err(error),
            };
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    state.done = true;
                    return Some((Err(Error::from_boxed(error.into())), state));
                }
            };
            let batch = Batch::new(state.run.stream.clone(), state.run.run_id, state.seq)
                .with_records(page.records)
                .with_cursor(page.cursor.clone())
                .with_epoch(state.run.epoch)
                .with_repaired(page.repaired)
                .with_last(page.last);
            state.seq += 1;
            state.cursor = page.cursor;
            state.done = page.last;
            Some((Ok(batch), state))
        })
        .boxed()
    }
}
