//! The HTTP side of weld-pipeline: the HubSpot source, a HubSpot fake, and the HTTP transport.
//!
//! This crate will hold the source that pages through HubSpot's CRM v3 API (full syncs through
//! the list endpoint, incremental ones through search windows), a faithful local fake of that API
//! with fault injection (feature `fake`), and an HTTP/1.1 implementation of
//! [`weld_pipeline::Transport`].
//!
//! Today it holds nothing but this page. The core's generated source stands in for HubSpot in the
//! meantime:
//!
//! ```
//! use weld_pipeline::source::{Generator, Pages};
//!
//! let source = Pages::new(Generator::contacts(10_000));
//! # let _ = source;
//! ```
