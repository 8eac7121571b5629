//! The controller's side: an axum app holding one session per worker.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use weld_pipeline::sync::Locked;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use axum::{Json, Router};
use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};
use weld_pipeline::encoding::{decode_message, encode_message};
use weld_pipeline::telemetry::{Tally, SUMMARY_EVERY};
use weld_pipeline::transport::kit::{self, Pending};
use weld_pipeline::transport::{check_hello, random_bytes, Handler, Listener};
use weld_pipeline::{Error, Event, Hello, Message, Request, Response};

use super::challenges::Challenges;
use super::{hex, unhex, HttpConfig, HttpPeer, CORRELATION, POLLED_EVENT, POLLED_REQUEST, SESSION};

/// Events of one session queued for its handler before the worker's posts wait: a run's reports
/// and the outbox depth, a few per run.
const EVENTS_QUEUED: usize = 64;

/// The largest body taken before a session exists (a hello, an answer to a challenge).
pub(super) const PRE_AUTH_BODY_LIMIT: usize = 4 * 1024;

/// A worker's session, as the controller holds it.
#[derive(Debug)]
struct Session {
    hello: Hello,
    /// Frames for the worker, handed out by its polls.
    queue: Mutex<VecDeque<Bytes>>,
    ready: Notify,
    /// The controller's requests waiting for the worker's replies.
    pending: Pending,
    /// The worker's events, handed to the handler one at a time, in order.
    events: mpsc::Sender<Event>,
    closed: CancellationToken,
    last_poll: Mutex<Instant>,
    max_body: usize,
}

/// The controller's view of a worker.
#[derive(Clone, Debug)]
pub struct ServerSide {
    session: Arc<Session>,
}

/// A poll frame (see the module docs): kind, correlation id, message.
pub(super) fn poll_frame(kind: u8, correlation: u64, message: &Message) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    out.put_u8(kind);
    out.put_u64(correlation);
    encode_message(message, &mut out);
    out.freeze()
}

impl ServerSide {
    pub(super) fn hello(&self) -> &Hello {
        &self.session.hello
    }

    fn push(&self, frame: Bytes) -> Result<(), Error> {
        kit::check_size(frame.len(), self.session.max_body)?;
        self.session.queue.locked().push_back(frame);
        self.session.ready.notify_one();
        Ok(())
    }

    pub(super) async fn request(&self, request: Request) -> Result<Response, Error> {
        let session = &self.session;
        if session.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let waiting = session.pending.register();
        self.push(poll_frame(
            POLLED_REQUEST,
            waiting.id(),
            &Message::Request(request),
        ))?;
        waiting.wait(&session.closed).await
    }

    pub(super) async fn notify(&self, event: Event) -> Result<(), Error> {
        if self.session.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        self.push(poll_frame(POLLED_EVENT, 0, &Message::Event(event)))
    }

    pub(super) async fn closed(&self) {
        self.session.closed.cancelled().await;
    }

    pub(super) fn close(&self) {
        self.session.closed.cancel();
    }
}

struct App {
    handler: Arc<dyn Handler>,
    config: Arc<HttpConfig>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Hellos waiting for their answer, the oldest pushed out to make room.
    challenged: Mutex<Challenges>,
    arrivals: mpsc::Sender<HttpPeer>,
    /// Hellos refused for a wrong secret: the first of every 30 s is logged, the others counted.
    wrong_secrets: Tally,
    /// Challenges pushed out by newer hellos (a hello flood): the first of every 30 s is
    /// logged, the others counted.
    evicted_challenges: Tally,
}

/// A controller's HTTP listener: [`Listener::accept`] yields workers whose hello was accepted.
/// Dropping it stops serving.
#[derive(Debug)]
pub struct HttpAcceptor {
    local: SocketAddr,
    arrivals: mpsc::Receiver<HttpPeer>,
    _stop: DropGuard,
}

impl HttpAcceptor {
    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

#[async_trait::async_trait]
impl Listener for HttpAcceptor {
    type Peer = HttpPeer;

    async fn accept(&mut self) -> Result<HttpPeer, Error> {
        self.arrivals.recv().await.ok_or(Error::Closed)
    }
}

pub(super) async fn listen(
    addr: &kit::ListenAddr,
    handler: Arc<dyn Handler>,
    config: Arc<HttpConfig>,
) -> Result<HttpAcceptor, Error> {
    let (listener, local) = addr.bind().await?;
    let (arrive, arrivals) = mpsc::channel(64);
    let app = Arc::new(App {
        handler,
        config: config.clone(),
        sessions: Mutex::default(),
        challenged: Mutex::default(),
        arrivals: arrive,
        wrong_secrets: Tally::default(),
        evicted_challenges: Tally::default(),
    });
    let router = Router::new()
        // Before a session, bodies are small (see `pre_auth_body`); a session's routes read
        // their body only once the session is known.
        .route("/v1/hello", post(hello))
        .route("/v1/answer", post(answer))
        .route("/v1/request", post(request))
        .route("/v1/event", post(event))
        .route("/v1/poll", post(poll))
        .route("/v1/reply", post(reply))
        .with_state(app.clone());
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    // Under the descriptor limit: see `listener::Descriptors`.
    let limits = config
        .limits
        .clone()
        .capped_at(crate::listener::Descriptors::of_this_process().per_listener);
    tokio::spawn(crate::listener::serve(listener, router, limits, stopped));
    tokio::spawn(reap(app, stop.clone()));
    tracing::info!(%local, "listening for workers over HTTP");
    Ok(HttpAcceptor {
        local,
        arrivals,
        _stop: stop.drop_guard(),
    })
}

/// Closes sessions whose worker stopped polling, and forgets stale challenges.
async fn reap(app: Arc<App>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(app.config.poll_wait / 2);
    let mut summarised = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                for session in app.sessions.locked().values() {
                    session.closed.cancel();
                }
                return;
            }
            _ = tick.tick() => {}
        }
        let timeout = app.config.session_timeout;
        app.sessions.locked().retain(|_, session| {
            let quiet = session.last_poll.locked().elapsed();
            if quiet > timeout || session.closed.is_cancelled() {
                if !session.closed.is_cancelled() {
                    tracing::warn!(worker_id = %session.hello.worker_id, "no poll for {quiet:?}: session closed");
                }
                session.closed.cancel();
                return false;
            }
            true
        });
        app.challenged.locked().expire(timeout);
        if summarised.elapsed() >= SUMMARY_EVERY {
            summarised = tokio::time::Instant::now();
            let more = app.wrong_secrets.take();
            if more > 0 {
                tracing::warn!(
                    refused = more,
                    "more hellos with a wrong secret refused in the last 30 s"
                );
            }
            let more = app.evicted_challenges.take();
            if more > 0 {
                tracing::warn!(
                    evicted = more,
                    "more pending challenges pushed out by newer hellos in the last 30 s (hellos never answered)"
                );
            }
        }
    }
}

fn refused(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn binary(body: Bytes) -> HttpResponse {
    ([("content-type", "application/octet-stream")], body).into_response()
}

async fn open_session(app: &Arc<App>, hello: Hello) -> HttpResponse {
    if app.sessions.locked().len() >= app.config.max_sessions {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "too many sessions");
    }
    let token = hex(&random_bytes());
    let closed = CancellationToken::new();
    let events = kit::event_pump(
        app.handler.clone(),
        hello.clone(),
        closed.clone(),
        EVENTS_QUEUED,
    );
    let session = Arc::new(Session {
        hello,
        queue: Mutex::default(),
        ready: Notify::new(),
        pending: Pending::default(),
        events,
        closed,
        last_poll: Mutex::new(Instant::now()),
        max_body: app.config.max_body_bytes,
    });
    app.sessions.locked().insert(token.clone(), session.clone());
    tracing::info!(worker_id = %session.hello.worker_id, "worker authenticated over HTTP");
    if app
        .arrivals
        .send(HttpPeer::Server(ServerSide { session }))
        .await
        .is_err()
    {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "not accepting workers");
    }
    Json(json!({"session": token})).into_response()
}

async fn hello(
    State(app): State<Arc<App>>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    // The listener says who the client is; a router driven without one counts all as one.
    let client = client.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |info| {
        crate::listener::client_of(info.0 .0.ip())
    });
    let body = match pre_auth_body(&headers, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let hello = match decode_message(body) {
        Ok(Message::Hello(hello)) => hello,
        Ok(_) => return refused(StatusCode::BAD_REQUEST, "expected a hello"),
        Err(error) => {
            return refused(
                StatusCode::BAD_REQUEST,
                format!("the hello does not decode: {error}"),
            )
        }
    };
    if let Err(error) = check_hello(&hello) {
        return refused(
            StatusCode::BAD_REQUEST,
            format!("unsupported version: {error}"),
        );
    }
    if app.config.secret.is_none() {
        return open_session(&app, hello).await;
    }
    let challenge = random_bytes();
    let pending = hex(&random_bytes());
    // Every hello gets a place: its client's oldest goes past its share, the oldest of the
    // client holding most when all are taken (see `challenges`).
    let evicted = app
        .challenged
        .locked()
        .insert(pending.clone(), client, hello, challenge);
    if evicted && app.evicted_challenges.record() {
        tracing::warn!(
            "pending challenges all taken: the oldest are pushed out by newer hellos, never answered (a hello flood?); more in the next 30 s are counted, not logged"
        );
    }
    Json(json!({"challenge": hex(&challenge), "pending": pending})).into_response()
}

#[derive(Deserialize)]
struct Answer {
    pending: String,
    proof: String,
}

async fn answer(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> HttpResponse {
    let answer: Answer = match pre_auth_body(&headers, body).await {
        Ok(body) => match serde_json::from_slice(&body) {
            Ok(answer) => answer,
            Err(error) => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    format!("an answer that does not parse: {error}"),
                )
            }
        },
        Err(refusal) => return refusal,
    };
    let Some((hello, challenge)) = app.challenged.locked().take(&answer.pending) else {
        // Expired, or pushed out by newer hellos: nothing is wrong with the worker, which says
        // hello again (401 is transient to the client).
        return refused(
            StatusCode::UNAUTHORIZED,
            "no such challenge (expired, or pushed out by newer hellos): say hello again",
        );
    };
    let secret = app
        .config
        .secret
        .as_ref()
        .expect("a challenge is only sent with a secret");
    let proof = unhex(&answer.proof).unwrap_or_default();
    if !secret.verify(&challenge, &hello.worker_id, &proof) {
        if app.wrong_secrets.record() {
            tracing::warn!(worker_id = %hello.worker_id, "wrong secret: refused (more in the next 30 s are counted, not logged)");
        }
        return refused(
            StatusCode::FORBIDDEN,
            format!(
                "authentication failed: worker {} has the wrong secret",
                hello.worker_id
            ),
        );
    }
    open_session(&app, hello).await
}

/// The session a request names, or `None` (answered 401: the worker reconnects).
fn session(app: &App, headers: &HeaderMap) -> Option<Arc<Session>> {
    let token = headers
        .get(SESSION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let sessions = app.sessions.locked();
    sessions
        .get(token)
        .filter(|s| !s.closed.is_cancelled())
        .cloned()
}

fn no_session() -> HttpResponse {
    refused(StatusCode::UNAUTHORIZED, "no such session")
}

/// The body of a hello or an answer: 4 KiB at most, as the TCP transport's handshake frames. A
/// declared length past that is refused before a byte of the body is read.
async fn pre_auth_body(headers: &HeaderMap, body: Body) -> Result<Bytes, HttpResponse> {
    let too_large = || {
        refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a handshake body over {PRE_AUTH_BODY_LIMIT} bytes"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > PRE_AUTH_BODY_LIMIT as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, PRE_AUTH_BODY_LIMIT)
        .await
        .map_err(|_| too_large())
}

/// The body of a session's request, read only now that the session is known, up to the body
/// limit: an unauthenticated client cannot make the controller buffer anything.
async fn read_body(app: &App, body: Body) -> Result<Bytes, HttpResponse> {
    axum::body::to_bytes(body, app.config.max_body_bytes)
        .await
        .map_err(|_| {
            refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a body over {} bytes", app.config.max_body_bytes),
            )
        })
}

async fn request(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> HttpResponse {
    let Some(session) = session(&app, &headers) else {
        return no_session();
    };
    let body = match read_body(&app, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let request = match decode_message(body) {
        Ok(Message::Request(request)) => request,
        _ => return refused(StatusCode::BAD_REQUEST, "the body is not a request"),
    };
    let answer = kit::answer(&*app.handler, &session.hello, request).await;
    let mut out = BytesMut::new();
    encode_message(&Message::Response(answer), &mut out);
    binary(out.freeze())
}

async fn event(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> HttpResponse {
    let Some(session) = session(&app, &headers) else {
        return no_session();
    };
    let body = match read_body(&app, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    match decode_message(body) {
        // Queued for the session's event pump, so the handler sees one event at a time, in the
        // order their posts arrived, as `Handler::event` promises; a full queue holds the post.
        Ok(Message::Event(event)) => match session.events.send(event).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(_) => refused(StatusCode::UNAUTHORIZED, "session closed"),
        },
        _ => refused(StatusCode::BAD_REQUEST, "the body is not an event"),
    }
}

async fn poll(State(app): State<Arc<App>>, headers: HeaderMap) -> HttpResponse {
    let Some(session) = session(&app, &headers) else {
        return no_session();
    };
    *session.last_poll.locked() = Instant::now();
    let deadline = tokio::time::Instant::now() + app.config.poll_wait;
    loop {
        let ready = session.ready.notified();
        if let Some(frame) = session.queue.locked().pop_front() {
            return binary(frame);
        }
        tokio::select! {
            () = ready => {}
            () = session.closed.cancelled() => return refused(StatusCode::UNAUTHORIZED, "session closed"),
            () = tokio::time::sleep_until(deadline) => return StatusCode::NO_CONTENT.into_response(),
        }
    }
}

async fn reply(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> HttpResponse {
    let Some(session) = session(&app, &headers) else {
        return no_session();
    };
    let body = match read_body(&app, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let Some(correlation) = headers
        .get(CORRELATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return refused(StatusCode::BAD_REQUEST, "no correlation id");
    };
    let Ok(Message::Response(response)) = decode_message(body) else {
        return refused(StatusCode::BAD_REQUEST, "the body is not a response");
    };
    // A reply no request waits for any more (it timed out) is dropped.
    session.pending.resolve(correlation, response);
    StatusCode::NO_CONTENT.into_response()
}
