//! Socket activation: the app's listening socket, bound once by the agent (`[app] listen`) and
//! passed to every start of the app the way systemd passes sockets (`sd_listen_fds(3)`): as
//! fd 3, with `LISTEN_FDS=1`, `LISTEN_PID=<the app's own pid>` and `LISTEN_FDNAMES=app`.
//!
//! The agent keeps the socket open across restarts: while no app runs, the kernel completes the
//! handshakes of new connections and queues them in the socket's backlog, and the next start of
//! the app accepts them. A crash then costs the requests the dying app had accepted, not the
//! connections refused while the next one starts and binds its port again.
//!
//! The agent's copy is close-on-exec (no program the agent starts gets it); only the app's fd 3
//! is inherited, set up in the child between clone and execve ([`super::spawn`]).

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog of the listening socket: connections the kernel holds while no app accepts, e.g.
/// during a restart. 511 is Node's, nginx's and Redis's default; Linux caps it at
/// `net.core.somaxconn` (4096 since Linux 5.4).
pub const LISTEN_BACKLOG: i32 = 511;

/// The fd number the app finds the socket at (`SD_LISTEN_FDS_START`).
pub const LISTEN_FD: i32 = 3;

/// `LISTEN_FDNAMES` of the socket.
pub const LISTEN_FDNAME: &str = "app";

/// The variables of the protocol: the agent sets them for every start, `app.env` may not.
pub const LISTEN_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Errors binding `[app] listen`.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A step of socket/setsockopt/bind/listen failed.
    #[error("app.listen {addr}: cannot {step}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// `create the socket`, `set SO_REUSEADDR`, `bind`, `listen`.
        step: &'static str,
        /// Why (e.g. address in use, or a port below 1024 without CAP_NET_BIND_SERVICE).
        source: std::io::Error,
    },
}

/// The app's listening socket (TCP, close-on-exec in the agent, blocking).
#[derive(Debug)]
pub struct ListenSocket {
    fd: OwnedFd,
    addr: SocketAddr,
}

impl ListenSocket {
    /// Binds `addr` with `SO_REUSEADDR` (a restarted agent rebinds at once, whatever connections
    /// of the previous one are still in TIME_WAIT) and listens with [`LISTEN_BACKLOG`].
    pub fn bind(addr: SocketAddr) -> Result<Self, SocketError> {
        let err = |step, source| SocketError::Bind { addr, step, source };
        // socket2 creates it with SOCK_CLOEXEC.
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| err("create the socket", e))?;
        s.set_reuse_address(true)
            .map_err(|e| err("set SO_REUSEADDR", e))?;
        s.bind(&addr.into()).map_err(|e| err("bind", e))?;
        s.listen(LISTEN_BACKLOG).map_err(|e| err("listen", e))?;
        let addr = s
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(addr);
        Ok(Self {
            fd: above_listen_fd(s.into()).map_err(|e| err("move the socket above fd 3", e))?,
            addr,
        })
    }

    /// Stops listening once the app is down for good: `shutdown(SHUT_RD)` on a listening socket
    /// closes it in the kernel (for every descriptor of it), so the connections still queued are
    /// reset and new ones refused.
    pub fn stop_listening(&self) {
        if let Err(e) = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Read) {
            tracing::warn!(addr = %self.addr, error = %e, "cannot close the app's listening socket");
        }
    }

    /// The bound address (the configured one; its real port when that was 0, in tests).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// `fd`, or a close-on-exec copy numbered above [`LISTEN_FD`]: the child then always makes fd 3
/// with one `dup2` (which clears close-on-exec on the copy), never from fd 3 onto itself.
fn above_listen_fd(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd.as_raw_fd() > LISTEN_FD {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; it returns a new descriptor or -1.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, LISTEN_FD + 1) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

impl AsFd for ListenSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for ListenSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_flags(fd: i32) -> i32 {
        // SAFETY: F_GETFD on a descriptor this test owns.
        unsafe { libc::fcntl(fd, libc::F_GETFD) }
    }

    /// (accept queue length, backlog) of a listening socket: for a socket in LISTEN state,
    /// Linux reports them in TCP_INFO's `tcpi_unacked` and `tcpi_sacked`.
    fn queue(s: &ListenSocket) -> (u32, u32) {
        // SAFETY: tcp_info is plain data; all zero is a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).unwrap();
        // SAFETY: getsockopt on a socket this test owns, into a buffer of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                std::ptr::addr_of_mut!(info).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        (info.tcpi_unacked, info.tcpi_sacked)
    }

    #[test]
    fn test_bind_listens_close_on_exec_with_the_backlog() {
        let s = ListenSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(s.addr().port(), 0);
        assert_ne!(
            fd_flags(s.as_raw_fd()) & libc::FD_CLOEXEC,
            0,
            "close-on-exec"
        );
        assert!(s.as_raw_fd() > LISTEN_FD);
        assert!(
            socket2::SockRef::from(&s).reuse_address().unwrap(),
            "SO_REUSEADDR"
        );
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let (queued, backlog) = queue(&s);
        assert_eq!(queued, 0);
        assert_eq!(backlog, 511.min(somaxconn));
        // Connections complete while nothing accepts: they wait in the queue.
        let clients: Vec<std::net::TcpStream> = (0..20)
            .map(|_| std::net::TcpStream::connect(s.addr()).unwrap())
            .collect();
        assert_eq!(queue(&s).0, 20, "{} clients", clients.len());
    }

    #[test]
    fn test_a_low_descriptor_moves_above_fd_3() {
        let (low, _keep) = std::os::unix::net::UnixStream::pair().unwrap();
        let low = OwnedFd::from(low);
        // SAFETY: a copy of stdin (unused by the test), restored below.
        let saved = unsafe { libc::dup(0) };
        assert!(saved >= 0);
        // SAFETY: fd 0 of this test process now names `low`'s socket.
        assert_eq!(unsafe { libc::dup2(low.as_raw_fd(), 0) }, 0);
        // SAFETY: fd 0 is open (just made); the OwnedFd owns it until it is moved.
        let zero = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(0) };
        let moved = above_listen_fd(zero).unwrap();
        assert!(moved.as_raw_fd() > LISTEN_FD);
        assert_ne!(fd_flags(moved.as_raw_fd()) & libc::FD_CLOEXEC, 0);
        // SAFETY: stdin back as it was (`zero` was closed when it was moved).
        unsafe {
            libc::dup2(saved, 0);
            libc::close(saved);
        }
    }

    #[test]
    fn test_a_port_in_use_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = ListenSocket::bind(addr).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("app.listen {addr}: cannot bind")),
            "{text}"
        );
        assert!(text.contains("in use"), "{text}");

        // An app that binds the port itself while the agent holds it fails (std sets
        // SO_REUSEADDR too, which does not share a port with a listening socket).
        let held = ListenSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let e = std::net::TcpListener::bind(held.addr()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[test]
    fn test_stop_listening_resets_the_queue_and_refuses() {
        use std::io::Read;
        let s = ListenSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut queued = std::net::TcpStream::connect(s.addr()).unwrap();
        s.stop_listening();
        let mut buf = [0u8; 1];
        let e = queued.read(&mut buf);
        assert!(
            matches!(&e, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{e:?}"
        );
        let e = std::net::TcpStream::connect(s.addr()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
