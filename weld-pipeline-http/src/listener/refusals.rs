//! What the listener answers itself, in the API's error shape `{"error":{"code","message"}}`:
//! a request that overran its time, and what hyper refuses before any handler runs.
//!
//! hyper answers a request head it cannot parse (400), a URI too long (414) or a head past
//! [`Limits::max_header_bytes`](super::Limits::max_header_bytes) (431) on its own, with an
//! empty body and no hook to change it. [`Refusals`] wraps the socket and replaces that one
//! answer, recognised by its shape (one of those statuses, `content-length: 0`, no
//! `content-type`, nothing after the head, which no handler here sends), with the same status
//! and a JSON body. hyper closes the connection after it; so does the answer's
//! `connection: close`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An answer of the listener's own, in the API's error shape.
pub(crate) fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body(code, message),
    )
        .into_response()
}

fn body(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message}}).to_string()
}

/// The code and message for each status hyper answers on its own.
fn refused(status: u16) -> Option<(&'static str, &'static str)> {
    match status {
        400 => Some((
            "malformed_request",
            "the request line or a header is not HTTP/1.1",
        )),
        414 => Some(("uri_too_long", "the request's URI is too long")),
        431 => Some((
            "headers_too_large",
            "the request line and headers are larger than this listener takes",
        )),
        _ => None,
    }
}

/// hyper's own answers are a bare head of a few lines.
const MAX_AUTOMATIC_HEAD: usize = 512;

/// `head` with a JSON body, if it is one of hyper's automatic answers.
fn replace(head: &[u8]) -> Option<Vec<u8>> {
    if head.len() > MAX_AUTOMATIC_HEAD || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.trim_end().split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let (code, message) = refused(status)?;
    let headers: Vec<&str> = lines.collect();
    let named = |name: &str| {
        headers.iter().any(|line| {
            line.split_once(':')
                .is_some_and(|(key, _)| key.trim().eq_ignore_ascii_case(name))
        })
    };
    let empty = headers.iter().any(|line| {
        line.split_once(':').is_some_and(|(key, value)| {
            key.trim().eq_ignore_ascii_case("content-length") && value.trim() == "0"
        })
    });
    if !empty || named("content-type") {
        return None;
    }
    let body = body(code, message);
    let mut answer = format!("{status_line}\r\n");
    for line in headers.iter().filter(|line| {
        let key = line.split_once(':').map_or("", |(key, _)| key.trim());
        !key.eq_ignore_ascii_case("content-length") && !key.eq_ignore_ascii_case("connection")
    }) {
        answer.push_str(line);
        answer.push_str("\r\n");
    }
    answer.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    Some(answer.into_bytes())
}

/// A socket whose writes pass through, but for hyper's automatic answers, which leave in the
/// API's error shape (see the module docs).
pub(crate) struct Refusals<S> {
    inner: S,
    /// An answer being written in place of hyper's: its bytes, how many are out, and the
    /// length of what it replaces (reported to hyper as written once all are out).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<S> Refusals<S> {
    pub(crate) fn new(inner: S) -> Self {
        Refusals {
            inner,
            replacing: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> Refusals<S> {
    /// Writes the replacement of `original` (one of hyper's answers) to its end, then reports
    /// `original` as written.
    fn poll_replacing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((answer, written, original)) = &mut self.replacing else {
            return Poll::Ready(Ok(0));
        };
        while *written < answer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let original = *original;
        self.replacing = None;
        Poll::Ready(Ok(original))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Refusals<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Refusals<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            if let Some(answer) = replace(buf) {
                this.replacing = Some((answer, 0, buf.len()));
            }
        }
        if this.replacing.is_some() {
            return this.poll_replacing(cx);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper's automatic answer is its head alone: one slice.
        let mut filled = bufs.iter().filter(|buf| !buf.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            return self.poll_write(cx, only);
        }
        let this = self.get_mut();
        if this.replacing.is_some() {
            return this.poll_replacing(cx);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bare_answers_get_a_json_body_and_everything_else_passes() {
        let automatic = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 13:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(replace(automatic).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains("date: Tue"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "headers_too_large");
        for passes in [
            // A handler's own 400, with its body.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"{\"records\":[]}",
        ] {
            assert_eq!(replace(passes), None, "{}", String::from_utf8_lossy(passes));
        }
    }
}
