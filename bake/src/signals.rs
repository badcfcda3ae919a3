//! SIGINT (Ctrl-C), SIGTERM and SIGHUP: all three mean "stop", as a CI runner's cancel sends
//! SIGINT then SIGTERM and a closed terminal sends SIGHUP. [`install`] (first thing in
//! [`crate::run`]) replaces their default action (die at once, leaving Packer and its build
//! instance behind) with a count that [`Interrupts`] waits on: a running Packer build is asked to
//! clean up and waited for, a watched refresh is detached or cancelled as configured.

use std::sync::OnceLock;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Signals received so far, and the last one's name.
static RECEIVED: OnceLock<watch::Sender<(u32, &'static str)>> = OnceLock::new();

/// Starts counting SIGINT, SIGTERM and SIGHUP (idempotent; needs a Tokio runtime). From then on
/// none of them ends the process by itself.
pub fn install() -> std::io::Result<()> {
    if RECEIVED.get().is_some() {
        return Ok(());
    }
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let tx = RECEIVED.get_or_init(|| watch::channel((0, "")).0).clone();
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
            };
            tracing::debug!(signal = name, "received");
            tx.send_modify(|(n, last)| {
                *n += 1;
                *last = name;
            });
        }
    });
    Ok(())
}

/// How many signals arrived since [`install`].
#[must_use]
pub fn received() -> u32 {
    RECEIVED.get().map_or(0, |tx| tx.borrow().0)
}

/// Waits for interrupts. Each [`Interrupts`] sees every signal since [`install`], once: one that
/// came before it was made is returned by its first [`Interrupts::recv`] at once, so a signal
/// between two steps is not lost.
#[derive(Debug)]
pub struct Interrupts {
    rx: Option<watch::Receiver<(u32, &'static str)>>,
    seen: u32,
}

impl Interrupts {
    /// A waiter; without [`install`] it never returns.
    #[must_use]
    pub fn new() -> Self {
        Self {
            rx: RECEIVED.get().map(watch::Sender::subscribe),
            seen: 0,
        }
    }

    /// The next signal not yet returned by this waiter: its name (`SIGINT`, `SIGTERM`, `SIGHUP`).
    pub async fn recv(&mut self) -> &'static str {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            let (n, name) = *rx.borrow_and_update();
            if n > self.seen {
                self.seen = n;
                return name;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

impl Default for Interrupts {
    fn default() -> Self {
        Self::new()
    }
}
