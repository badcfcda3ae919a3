//! Socket activation (`[app] listen`): the agent binds the app's socket once and passes it to
//! every start as fd 3 with `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`; a connection that
//! arrives while the app restarts waits in the backlog and is answered by the next start.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bake_e2e::fleet::http_get;

use crate::util::{
    agent, children_of, free_port, imds, sample_app, wait_for, Running, TestDir, AGENT,
};

/// The inode of the TCP socket listening on 127.0.0.1:`port`, from /proc/net/tcp.
fn listening_inode(port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // sl local_address rem_address st … inode(9); st 0A = LISTEN.
        (f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")).then(|| f[9].to_owned())
    })
}

/// `socket:[N]` links among `pid`'s fds.
fn sockets_of(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.display().to_string())
                .filter(|l| l.starts_with("socket:["))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn test_every_start_gets_the_socket_as_fd_3_with_its_own_listen_pid() {
    let t = TestDir::new();
    let port = free_port();
    let report = t.path("report");
    let marker = t.path("started-once");
    // The first start reports and crashes; the second reports and stays.
    let script = format!(
        "echo \"$$ $LISTEN_PID $LISTEN_FDS $LISTEN_FDNAMES $(readlink /proc/$$/fd/3)\" >> {r}; \
         if [ -e {m} ]; then exec sleep 60; fi; touch {m}; exit 1",
        r = report.display(),
        m = marker.display()
    );
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n\
         listen = \"127.0.0.1:{port}\"\nstop_timeout = \"1s\"\n\
         [readiness]\nprobe = \"tcp://127.0.0.1:{port}\"\ninterval = \"100ms\"\n"
    ));
    let md = imds("i-0listen");
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    let lines = wait_for("two starts", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        let v: Vec<String> = text.lines().map(str::to_owned).collect();
        (v.len() >= 2).then_some(v)
    });
    let inode = listening_inode(port).expect("a socket listens on the port");
    for line in &lines {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 5, "{line}");
        assert_eq!(f[0], f[1], "LISTEN_PID is the app's own pid: {line}");
        assert_eq!((f[2], f[3]), ("1", "app"), "{line}");
        // The same socket, bound once at the configured address, in both starts.
        assert_eq!(f[4], format!("socket:[{inode}]"), "{line}");
    }
    // The agent holds it between starts, and it is the app's port (PORT).
    assert!(
        sockets_of(a.pid()).contains(&format!("socket:[{inode}]")),
        "the agent holds the socket"
    );
    assert!(
        a.stderr().contains("app.listen: socket bound"),
        "{}",
        a.stderr()
    );
    // A tcp probe connects to the agent's socket: "ready" although the app (sleep) never
    // accepts, and the agent says so.
    wait_for("ready", Duration::from_secs(10), || {
        a.stderr().contains("app is ready").then_some(())
    });
    assert!(
        a.stderr()
            .contains("readiness.probe is tcp with app.listen"),
        "{}",
        a.stderr()
    );
    // While the app (sleep) accepts nothing, a client still connects: it waits in the backlog.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("queued connect");
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    // Once the agent stopped the app for good, the port is closed.
    let e = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}

/// The sample app behind `sh -c 'sleep 0.5; exec node server.js'`: every start leaves a
/// restart window of at least half a second in which nothing accepts.
fn slow_start_config(t: &TestDir, port: u16, listen: bool) -> std::path::PathBuf {
    let script = format!("sleep 0.5; exec node {}", sample_app().display());
    let listen = if listen {
        format!("listen = \"127.0.0.1:{port}\"\n")
    } else {
        format!("port = {port}\n")
    };
    t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n\
         {listen}env = {{ APP_VERSION = \"7\" }}\nstop_timeout = \"3s\"\n\
         [readiness]\nprobe = \"http://127.0.0.1:{port}/health\"\ninterval = \"100ms\"\n"
    ))
}

/// Crashes the app with `GET /crash`, waits until its process is gone, then sends `GET /`:
/// (the answer, how long it took).
fn request_during_restart(
    a: &Running,
    addr: SocketAddr,
) -> (anyhow::Result<(u16, String)>, Duration) {
    let app = wait_for("the app", Duration::from_secs(20), || {
        children_of(a.pid())
            .into_iter()
            .find(|(_, s)| *s != 'Z')
            .map(|(p, _)| p)
    });
    wait_for("the app to answer", Duration::from_secs(20), || {
        matches!(http_get(addr, "/health"), Ok((200, _))).then_some(())
    });
    let (code, _) = http_get(addr, "/crash").expect("GET /crash answers before the exit");
    assert_eq!(code, 500);
    // Reaped, not only a zombie: the leader of a thread group is a zombie while its other
    // threads still exit, with its sockets open.
    wait_for(
        "the crashed app to be reaped",
        Duration::from_secs(10),
        || (!std::path::Path::new(&format!("/proc/{app}")).exists()).then_some(()),
    );
    let t0 = Instant::now();
    let answer = http_get(addr, "/");
    (answer, t0.elapsed())
}

#[test]
fn test_a_connect_during_a_restart_is_answered_by_the_next_start() {
    let t = TestDir::new();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let md = imds("i-0queued");
    let mut a = Running::spawn(agent(&slow_start_config(&t, port, true), None, Some(&md)));
    let (answer, waited) = request_during_restart(&a, addr);
    let (code, body) = answer.expect("the request waits for the next start");
    assert_eq!((code, body.trim()), (200, "app 7"));
    // It was queued: the next start needs its half second before it accepts.
    assert!(
        waited >= Duration::from_millis(300),
        "answered after {waited:?}"
    );
    wait_for("the restart to be logged", Duration::from_secs(10), || {
        a.stderr().contains("restarted at once").then_some(())
    });
    // The readiness probe (http) saw the app itself answer.
    assert!(a.stderr().contains("app is ready"), "{}", a.stderr());
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));

    // The same app binding PORT itself: the connect in that window is refused.
    let t = TestDir::new();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut a = Running::spawn(agent(&slow_start_config(&t, port, false), None, Some(&md)));
    let (answer, _) = request_during_restart(&a, addr);
    let e = answer.expect_err("nothing listens while the app restarts");
    let io = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    assert_eq!(io, Some(std::io::ErrorKind::ConnectionRefused), "{e:#}");
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
}

#[test]
fn test_a_bad_listen_address_names_the_key_and_a_taken_port_the_address() {
    let t = TestDir::new();
    let cfg = t.config(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/true\"]\nlisten = \"localhost:3000\"\n",
    );
    let out = std::process::Command::new(AGENT)
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent.toml: app.listen: \"localhost:3000\" is not an IP address and port"),
        "{err}"
    );

    // A port another process listens on: `run` exits 7 naming the address; no app started.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let marker = t.path("app-ran");
    let cfg = t.config(&format!(
        "[identity]\nstandalone = true\n[app]\nuser = \"root\"\ncommand = [\"/bin/touch\", \"{}\"]\nlisten = \"{addr}\"\n",
        marker.display()
    ));
    let md = imds("i-0taken");
    let mut a = Running::spawn(agent(&cfg, None, Some(&md)));
    assert_eq!(a.wait(Duration::from_secs(20)), Some(7), "{}", a.stderr());
    assert!(
        a.stderr()
            .contains(&format!("app.listen {addr}: cannot bind")),
        "{}",
        a.stderr()
    );
    assert!(!marker.exists(), "the app was started");
}
