//! The worker's side: requests over pooled keep-alive connections, and a poll loop that
//! carries the controller's requests and doubles as the heartbeat.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use weld_pipeline::encoding::{decode_message, encode_message};
use weld_pipeline::transport::kit;
use weld_pipeline::transport::{Handler, CHALLENGE_LEN};
use weld_pipeline::{Error, ErrorKind, Event, Hello, Message, Request, Response};

use super::{hex, unhex, HttpConfig, CORRELATION, POLLED_EVENT, POLLED_REQUEST, SESSION};

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: String,
    session: String,
    hello: Hello,
    config: Arc<HttpConfig>,
    closed: CancellationToken,
}

/// The worker's side of a session. Clones share it.
#[derive(Clone, Debug)]
pub struct ClientSide {
    inner: Arc<Inner>,
}

#[derive(Deserialize)]
struct Greeting {
    session: Option<String>,
    challenge: Option<String>,
    pending: Option<String>,
    error: Option<String>,
}

fn encoded(message: &Message) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    encode_message(message, &mut out);
    out.freeze()
}

/// A failed exchange: the network or the server's refusal, classified.
fn failure(status: u16, body: &[u8]) -> Error {
    let message = serde_json::from_slice::<Greeting>(body)
        .ok()
        .and_then(|g| g.error)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    let kind = match status {
        401 | 500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    Error::new(kind, format!("the controller answered {status}: {message}"))
}

async fn post(
    http: &reqwest::Client,
    url: String,
    body: Bytes,
    headers: &[(&str, String)],
    config: &HttpConfig,
) -> Result<(u16, Bytes), Error> {
    let mut request = http.post(url).timeout(config.request_timeout).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            Error::Timeout {
                operation: "HTTP transport request",
                after: config.request_timeout,
            }
        } else {
            Error::Unavailable(format!("the controller is unreachable: {e}"))
        }
    })?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| Error::Unavailable(format!("reading an answer: {e}")))?;
    Ok((status, body))
}

pub(super) async fn connect(
    base: String,
    hello: Hello,
    handler: Arc<dyn Handler>,
    config: Arc<HttpConfig>,
) -> Result<ClientSide, Error> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        // Idle connections go before the controller's listener closes them (its header
        // timeout), so a request never races a close on a reused connection.
        .pool_idle_timeout(config.limits.header_timeout / 2)
        .build()
        .map_err(|e| Error::Bug(format!("cannot build the HTTP client: {e}")))?;
    let session = handshake(&http, &base, &hello, &config).await?;
    let client = ClientSide {
        inner: Arc::new(Inner {
            http,
            base,
            session,
            hello,
            config,
            closed: CancellationToken::new(),
        }),
    };
    tokio::spawn(poll_loop(client.clone(), handler));
    Ok(client)
}

/// How many times a hello is said at once when its challenge was lost before the answer came
/// (pushed out by a flood of newer hellos, see the server's challenge places): each try is a
/// new place at the front, and the worker runtime's backoff covers what these do not.
const HANDSHAKE_TRIES: usize = 8;

/// Hello, and with a secret the answer to its challenge: the session's token.
async fn handshake(
    http: &reqwest::Client,
    base: &str,
    hello: &Hello,
    config: &HttpConfig,
) -> Result<String, Error> {
    let mut tries = 0;
    loop {
        tries += 1;
        match greet(http, base, hello, config).await? {
            Greeted::Session(session) => return Ok(session),
            Greeted::ChallengeLost(error) if tries >= HANDSHAKE_TRIES => return Err(error),
            Greeted::ChallengeLost(error) => {
                tracing::debug!(error = %error, tries, "challenge lost before the answer; saying hello again");
            }
        }
    }
}

/// What one hello came to.
enum Greeted {
    Session(String),
    /// The controller no longer held the challenge when the answer came (401): say hello again.
    ChallengeLost(Error),
}

async fn greet(
    http: &reqwest::Client,
    base: &str,
    hello: &Hello,
    config: &HttpConfig,
) -> Result<Greeted, Error> {
    let (status, body) = post(
        http,
        format!("{base}/v1/hello"),
        encoded(&Message::Hello(hello.clone())),
        &[],
        config,
    )
    .await?;
    if status != 200 {
        return Err(failure(status, &body));
    }
    let greeting: Greeting = serde_json::from_slice(&body)
        .map_err(|e| Error::Invalid(format!("a hello answer that does not parse: {e}")))?;
    match (greeting.session, greeting.challenge, greeting.pending) {
        (Some(session), _, _) => Ok(Greeted::Session(session)),
        (None, Some(challenge), Some(pending)) => {
            let challenge = unhex(&challenge)
                .filter(|c| c.len() == CHALLENGE_LEN)
                .ok_or_else(|| Error::Invalid("a malformed challenge".into()))?;
            let secret = config.secret.as_ref().ok_or_else(|| {
                Error::Invalid("authentication failed: the controller requires a shared secret and none is configured".into())
            })?;
            let answer = serde_json::json!({"pending": pending, "proof": hex(&secret.prove(&challenge, &hello.worker_id))});
            let (status, body) = post(
                http,
                format!("{base}/v1/answer"),
                Bytes::from(answer.to_string()),
                &[("content-type", "application/json".into())],
                config,
            )
            .await?;
            match status {
                200 => serde_json::from_slice::<Greeting>(&body)
                    .ok()
                    .and_then(|g| g.session)
                    .map(Greeted::Session)
                    .ok_or_else(|| Error::Invalid("an answer without a session".into())),
                401 => Ok(Greeted::ChallengeLost(failure(status, &body))),
                _ => Err(failure(status, &body)),
            }
        }
        _ => Err(Error::Invalid(
            "a hello answer without a session or a challenge".into(),
        )),
    }
}

/// Polls for the controller's requests and events until the session ends. A failed poll ends
/// it: the poll is also the heartbeat the controller watches.
async fn poll_loop(client: ClientSide, handler: Arc<dyn Handler>) {
    let inner = &client.inner;
    // The controller's events, handed over one at a time, in order, without holding up the poll.
    let events = kit::event_pump(
        handler.clone(),
        inner.hello.clone(),
        inner.closed.clone(),
        64,
    );
    loop {
        let polled = tokio::select! {
            () = inner.closed.cancelled() => return,
            polled = client.exchange("poll", Bytes::new(), &[]) => polled,
        };
        let mut frame = match polled {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(error = %error, "poll failed; the session is over");
                inner.closed.cancel();
                return;
            }
        };
        if frame.len() < 9 {
            inner.closed.cancel();
            return;
        }
        let kind = frame.get_u8();
        let correlation = frame.get_u64();
        match (kind, decode_message(frame)) {
            (POLLED_REQUEST, Ok(Message::Request(request))) => {
                let (client, handler) = (client.clone(), handler.clone());
                tokio::spawn(async move {
                    let answer = kit::answer(&*handler, &client.inner.hello, request).await;
                    let body = encoded(&Message::Response(answer));
                    if let Err(error) = client
                        .exchange("reply", body, &[(CORRELATION, correlation.to_string())])
                        .await
                    {
                        tracing::warn!(error = %error, "a reply was not delivered");
                    }
                });
            }
            (POLLED_EVENT, Ok(Message::Event(event))) => {
                if events.send(event).await.is_err() {
                    return;
                }
            }
            _ => {
                tracing::warn!(
                    "the controller sent a frame that does not decode; the session is over"
                );
                inner.closed.cancel();
                return;
            }
        }
    }
}

impl ClientSide {
    pub(super) fn hello(&self) -> &Hello {
        &self.inner.hello
    }

    /// Posts to a route of the session; `None` for an empty answer. A failure on the network or
    /// a lost session closes the session.
    async fn exchange(
        &self,
        route: &str,
        body: Bytes,
        extra: &[(&str, String)],
    ) -> Result<Option<Bytes>, Error> {
        let inner = &self.inner;
        if inner.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let mut headers = vec![
            (SESSION, inner.session.clone()),
            ("content-type", "application/octet-stream".into()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let exchanged = tokio::select! {
            exchanged = post(&inner.http, format!("{}/v1/{route}", inner.base), body, &headers, &inner.config) => exchanged,
            () = inner.closed.cancelled() => return Err(Error::Closed),
        };
        match exchanged {
            Ok((200, body)) => Ok(Some(body)),
            Ok((204, _)) => Ok(None),
            Ok((413, body)) => Err(failure(413, &body)),
            Ok((status, body)) => {
                inner.closed.cancel();
                Err(failure(status, &body))
            }
            Err(error) => {
                inner.closed.cancel();
                Err(error)
            }
        }
    }

    pub(super) async fn request(&self, request: Request) -> Result<Response, Error> {
        let body = encoded(&Message::Request(request));
        kit::check_size(body.len(), self.inner.config.max_body_bytes)?;
        let answer = self
            .exchange("request", body, &[])
            .await?
            .ok_or(Error::Closed)?;
        match decode_message(answer) {
            Ok(Message::Response(response)) => Ok(response),
            _ => {
                self.inner.closed.cancel();
                Err(Error::Invalid(
                    "the controller's answer is not a response".into(),
                ))
            }
        }
    }

    pub(super) async fn notify(&self, event: Event) -> Result<(), Error> {
        let body = encoded(&Message::Event(event));
        kit::check_size(body.len(), self.inner.config.max_body_bytes)?;
        self.exchange("event", body, &[]).await.map(drop)
    }

    pub(super) async fn closed(&self) {
        self.inner.closed.cancelled().await;
    }

    pub(super) fn close(&self) {
        self.inner.closed.cancel();
    }
}
