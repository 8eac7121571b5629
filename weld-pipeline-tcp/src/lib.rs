//! The TCP transport of weld-pipeline.
//!
//! This crate will implement [`weld_pipeline::Transport`] over tokio TCP, so that a controller
//! and many workers on other machines talk through it: length-delimited frames carrying a frame
//! type, a correlation id and a message in the core's [encoding](weld_pipeline::encoding), a
//! handshake with the worker's [`Hello`](weld_pipeline::Hello) and an optional shared-secret
//! challenge, limits on frame size, connections and requests in flight, heartbeats and
//! reconnects.
//!
//! Today it holds nothing but this page: until it lands, run a pipeline in one process over
//! [`MemoryTransport`](weld_pipeline::transport::MemoryTransport):
//!
//! ```
//! use weld_pipeline::transport::MemoryTransport;
//!
//! let transport = MemoryTransport::new();
//! # let _ = transport;
//! ```
