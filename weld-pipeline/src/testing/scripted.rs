//! A tower service that answers from a script.

use crate::sync::Locked;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::Service;

use crate::error::{BoxError, Error};
use crate::message::Request;
use crate::source::PageRequest;

/// A service answering each call with the next result of a script, recording the tokio instant
/// of every call. Clones share the script.
#[derive(Clone, Debug)]
pub struct Scripted<T> {
    state: Arc<Mutex<ScriptState<T>>>,
}

#[derive(Debug)]
struct ScriptState<T> {
    script: VecDeque<Result<T, Error>>,
    /// What to answer once the script has run out.
    then: Option<T>,
    calls: Vec<Instant>,
}

impl<T: Clone + Send + 'static> Scripted<T> {
    /// Answers with `script`, in order; a call past its end is a bug error.
    pub fn new(script: impl IntoIterator<Item = Result<T, Error>>) -> Self {
        Scripted {
            state: Arc::new(Mutex::new(ScriptState {
                script: script.into_iter().collect(),
                then: None,
                calls: Vec::new(),
            })),
        }
    }

    /// Answers every call with `value`.
    pub fn always(value: T) -> Self {
        let scripted = Scripted::new([]);
        scripted.lock().then = Some(value);
        scripted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScriptState<T>> {
        self.state.locked()
    }

    /// How many calls were made.
    pub fn calls(&self) -> usize {
        self.lock().calls.len()
    }

    /// When each call was made.
    pub fn call_times(&self) -> Vec<Instant> {
        self.lock().calls.clone()
    }

    fn next(&self) -> Result<T, BoxError> {
        let mut state = self.lock();
        state.calls.push(Instant::now());
        match state.script.pop_front() {
            Some(result) => result.map_err(Into::into),
            None => state
                .then
                .clone()
                .ok_or_else(|| Error::Bug("the script ran out".into()).into()),
        }
    }
}

/// Implements `Service<$request>` for [`Scripted`]: one impl per request type the tests use, so
/// that calls infer their types.
macro_rules! scripted_service {
    ($($request:ty),*) => {$(
        impl<T: Clone + Send + 'static> Service<$request> for Scripted<T> {
            type Response = T;
            type Error = BoxError;
            type Future = std::future::Ready<Result<T, BoxError>>;

            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, _request: $request) -> Self::Future {
                std::future::ready(self.next())
            }
        }
    )*};
}

scripted_service!((), PageRequest, Request);
