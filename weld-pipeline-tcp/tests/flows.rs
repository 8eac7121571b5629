//! The runtime flows of the reliability model, over real TCP sockets on 127.0.0.1: the same
//! bodies the in-memory transport passes.

mod support;

use support::{quick_config, TcpNetwork};

weld_pipeline::runtime_flows!(TcpNetwork::new(quick_config()));
