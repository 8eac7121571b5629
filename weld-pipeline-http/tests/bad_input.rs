//! The bad input every transport must survive, over the HTTP transport on real sockets on
//! 127.0.0.1: the shared suite (`weld_pipeline::transport_bad_input!`). The HTTP transport's own
//! cases (a head past 4 KiB, a session route without a session, a body past the server's limit)
//! are in `http_transport.rs`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::quick_config;
use weld_pipeline::testing::bad_input::{Garbage, Settings, Wire};
use weld_pipeline_http::listener::Limits;
use weld_pipeline_http::transport::{HttpConfig, HttpTransport};

/// The HTTP transport under the bad-input suite every transport passes.
struct HttpWire;

impl Wire for HttpWire {
    type Transport = HttpTransport;

    fn transport(&self, addr: &str, settings: &Settings) -> HttpTransport {
        let quick = quick_config();
        HttpTransport::with_config(
            addr,
            HttpConfig {
                secret: settings.secret.clone(),
                max_body_bytes: settings.max_message_bytes.unwrap_or(quick.max_body_bytes),
                // A connection that says nothing is closed within a second, not ten.
                limits: Limits {
                    header_timeout: Duration::from_secs(1),
                    ..quick.limits.clone()
                },
                ..quick
            },
        )
    }

    fn local_addr(transport: &HttpTransport) -> Option<SocketAddr> {
        transport.local_addr()
    }

    fn garbage(&self) -> Vec<Garbage> {
        // A body that is no message, on every route of the transport: a 4xx, then the close
        // the request asked for.
        [
            ("garbage posted as a hello", "hello"),
            ("garbage posted as a request", "request"),
            ("garbage posted as an event", "event"),
            ("garbage posted as a poll", "poll"),
            ("garbage posted as a reply", "reply"),
            ("garbage posted as an answer", "answer"),
        ]
        .into_iter()
        .map(|(what, route)| Garbage {
            what,
            bytes: format!(
                "POST /v1/{route} HTTP/1.1\r\nhost: controller\r\nconnection: close\r\ncontent-length: 8\r\n\r\n\u{0}garbage"
            )
            .into_bytes(),
            refused: |answer| answer.starts_with(b"HTTP/1.1 4"),
        })
        .collect()
    }
}

weld_pipeline::transport_bad_input!(HttpWire);
