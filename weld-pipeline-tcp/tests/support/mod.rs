//! Test support for the TCP transport: a network for the runtime flows, short limits, and a
//! fault proxy.

#![allow(dead_code, unreachable_pub)] // each test binary uses part of it

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weld_pipeline::testing::Network;
use weld_pipeline_tcp::{TcpConfig, TcpTransport};

/// Every wait in these tests ends by this.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The TCP network of the runtime flows: the controller listens on a free port of 127.0.0.1
/// and keeps it across restarts; workers dial it (through a proxy, if one is set).
#[derive(Clone, Debug)]
pub struct TcpNetwork {
    pub controller: TcpTransport,
    pub config: TcpConfig,
    /// Where workers dial instead of the controller, when set (a fault proxy).
    pub via: Option<SocketAddr>,
}

impl TcpNetwork {
    pub fn new(config: TcpConfig) -> Self {
        TcpNetwork {
            controller: TcpTransport::with_config("127.0.0.1:0", config.clone()),
            config,
            via: None,
        }
    }
}

impl Network for TcpNetwork {
    type Transport = TcpTransport;

    fn controller(&self) -> TcpTransport {
        self.controller.clone()
    }

    fn worker(&self) -> TcpTransport {
        let addr = self
            .via
            .or_else(|| self.controller.local_addr())
            .expect("the controller listened first");
        TcpTransport::with_config(addr.to_string(), self.config.clone())
    }
}

/// Short limits, so that the tests see timeouts quickly; the heartbeat timeout still leaves a
/// loaded machine a second and a half to deliver a ping.
pub fn quick_config() -> TcpConfig {
    TcpConfig {
        handshake_timeout: Duration::from_millis(300),
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(1_500),
        ..TcpConfig::default()
    }
}

/// A fault proxy in front of a controller: forwards both directions, and in the direction of
/// acks (controller to worker) can delay, stop forwarding, or cut the connection.
#[derive(Clone, Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    cut_after: Arc<AtomicU64>,
}

/// What the proxy does to the ack direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward everything.
    None = 0,
    /// Hold each chunk 30 ms.
    Delay = 1,
    /// Stall: from now on this connection forwards nothing more to the worker, as a dead link
    /// does (TCP never loses bytes and then delivers later ones); the heartbeat closes it.
    Drop = 2,
    /// Close the connection after this many more bytes of acks.
    Cut = 3,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FaultProxy {
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(AtomicU8::new(Fault::None as u8)),
            cut_after: Arc::new(AtomicU64::new(0)),
        };
        let state = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move { state.pipe(client, server).await });
            }
        });
        proxy
    }

    pub fn set(&self, fault: Fault, cut_after: u64) {
        self.cut_after.store(cut_after, Ordering::SeqCst);
        self.mode.store(fault as u8, Ordering::SeqCst);
    }

    async fn pipe(self, client: TcpStream, server: TcpStream) {
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let requests = async {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        };
        let acks = async {
            let mut buf = vec![0u8; 16 * 1024];
            let mut stalled = false;
            loop {
                let n = match server_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                match self.mode.load(Ordering::SeqCst) {
                    1 => tokio::time::sleep(Duration::from_millis(30)).await,
                    2 => stalled = true,
                    3 => {
                        let left = self.cut_after.load(Ordering::SeqCst);
                        if (n as u64) >= left {
                            let _ = client_write.write_all(&buf[..left as usize]).await;
                            return;
                        }
                        self.cut_after.store(left - n as u64, Ordering::SeqCst);
                    }
                    _ => {}
                }
                if stalled {
                    continue;
                }
                if client_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        // Either direction ending ends both: the sockets drop, the peers see the cut.
        tokio::select! {
            () = requests => {}
            () = acks => {}
        }
    }
}
