//! A TCP relay from the host end of an instance's veth to the emulator on the host's loopback.
//!
//! The emulator (moto) listens on 127.0.0.1 only, and an instance has no route off its /30: the
//! relay listens on the host end address (`N.(4i+1)`, a port of its own) and copies each
//! connection to the emulator. It is the instance's only way to "AWS", as a VPC endpoint would
//! be. Bounded: at most [`MAX_CONNECTIONS`] at a time (more wait in the listen queue), every
//! connection ends after [`MAX_CONNECTION_LIFE`]; it stops, connections included, when dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// Connections relayed at the same time.
pub const MAX_CONNECTIONS: usize = 64;
/// The longest a relayed connection may live.
pub const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(300);

/// A running relay; stopped when dropped.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Listens on `listen`:any port and relays to `target`.
    pub fn start(listen: Ipv4Addr, target: SocketAddr) -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from((listen, 0)), target)
    }

    /// Listens on `listen` (port 0: any) and relays to `target`.
    pub fn start_on(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("binding the relay on {listen}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("relay-{}", listen.ip()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the relay");
                rt.block_on(serve(listener, target, stop_rx));
            })?;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Where instances connect: `N.(4i+1):PORT`.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://N.(4i+1):PORT`, the AWS endpoint an instance is given.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    target: SocketAddr,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        tokio::select! {
            _ = &mut stop => return,
            acc = listener.accept() => {
                let Ok((mut inbound, _)) = acc else { continue };
                tokio::spawn(async move {
                    let _permit = permit;
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::time::timeout(
                        MAX_CONNECTION_LIFE,
                        tokio::io::copy_bidirectional(&mut inbound, &mut outbound),
                    )
                    .await;
                });
            }
        }
    }
}
