//! The controller and worker runtimes over the in-memory transport, on real sled files in temp
//! directories: the flows of `weld_pipeline::testing::flows`, which every transport passes.

use weld_pipeline::transport::MemoryTransport;

weld_pipeline::runtime_flows!(MemoryTransport::new());
