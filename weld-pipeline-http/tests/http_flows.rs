//! The runtime flows of the reliability model over the HTTP transport: the same bodies the
//! in-memory and TCP transports pass.

mod support;

use support::{quick_config, HttpNetwork};

weld_pipeline::runtime_flows!(HttpNetwork::new(quick_config()));
