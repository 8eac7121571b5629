//! Test support for the HTTP crate: the network the runtime flows run on.

#![allow(dead_code, unreachable_pub)] // each test binary uses part of it

use std::time::Duration;

use weld_pipeline::testing::Network;
use weld_pipeline_http::transport::{HttpConfig, HttpTransport};

/// The HTTP network of the runtime flows: the controller serves a free port of 127.0.0.1 and
/// keeps it across restarts; workers talk to it.
#[derive(Clone, Debug)]
pub struct HttpNetwork {
    pub controller: HttpTransport,
    pub config: HttpConfig,
}

impl HttpNetwork {
    pub fn new(config: HttpConfig) -> Self {
        HttpNetwork {
            controller: HttpTransport::with_config("127.0.0.1:0", config.clone()),
            config,
        }
    }
}

impl Network for HttpNetwork {
    type Transport = HttpTransport;

    fn controller(&self) -> HttpTransport {
        self.controller.clone()
    }

    fn worker(&self) -> HttpTransport {
        let addr = self
            .controller
            .local_addr()
            .expect("the controller listened first");
        HttpTransport::with_config(addr.to_string(), self.config.clone())
    }
}

/// Short waits, so that a gone worker is noticed quickly, with room for a loaded machine.
pub fn quick_config() -> HttpConfig {
    HttpConfig {
        poll_wait: Duration::from_millis(200),
        session_timeout: Duration::from_millis(1_500),
        request_timeout: Duration::from_secs(10),
        ..HttpConfig::default()
    }
}
