//! sd_notify: READY and WATCHDOG to systemd through `$NOTIFY_SOCKET` (a datagram socket, path or
//! abstract `@name`). Written by hand: a few lines, and no dependency.
//! Protocol: <https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html>

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (e.g. `READY=1`) if the agent runs under systemd with a notify socket.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = &sent {
        tracing::warn!(error = %e, state, "sd_notify failed");
    }
    sent.is_ok()
}

/// Half the watchdog interval systemd asked for (`WATCHDOG_USEC`, for this pid), if any.
#[must_use]
pub fn watchdog_ping_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog forever at `interval`.
pub async fn watchdog(interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        notify("WATCHDOG=1");
    }
}
