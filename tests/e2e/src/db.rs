//! The fleet's database: a real PostgreSQL server (Debian's `postgresql` package, installed by
//! `tools/setup`), standing in for the data stack's RDS instance.
//!
//! [`Postgres::start`] makes a cluster in a temporary directory (`initdb`), starts `postgres` on
//! a free port of 127.0.0.1 only, with its Unix socket in that directory, and creates the app's
//! role and database ([`APP_USER`], [`APP_DATABASE`]) with a random password: the app connects
//! over TCP with `scram-sha-256`, as to RDS; the harness administers over the socket (`trust`,
//! local only). PostgreSQL refuses to run as root: when the harness is root (as CI is), the
//! server runs as Debian's `postgres` user, which owns the directory. Everything stops and is
//! removed when the value is dropped, also when a test panics.
//!
//! The password is a secret like any other: it is sent to `psql` on its standard input, never
//! in an argument, and [`Postgres`]'s `Debug` does not show it.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The app's role (RDS's master user in data.yaml is another; the app gets its own).
pub const APP_USER: &str = "app";
/// The app's database.
pub const APP_DATABASE: &str = "app";
/// How long the server has to accept connections after it started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running PostgreSQL server; stopped and removed when dropped.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    password: String,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("bin", &self.bin)
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The directory of the newest PostgreSQL installed (`/usr/lib/postgresql/<major>/bin`).
pub fn server_bin() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .with_context(|| {
            format!(
                "{} (Debian's postgresql package; tools/setup installs it)",
                root.display()
            )
        })?
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors
        .pop()
        .map(|(_, bin)| bin)
        .with_context(|| format!("no PostgreSQL server under {}", root.display()))
}

/// 32 hex digits from the kernel's random source.
fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `(uid, gid)` to run the server as: the `postgres` user when the harness is root, else none.
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")?
        .context("PostgreSQL refuses to run as root, and there is no postgres user")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

impl Postgres {
    /// Makes, starts and prepares the cluster (see the module documentation).
    pub fn start() -> anyhow::Result<Self> {
        let bin = server_bin()?;
        let user = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("bake-postgres-")
            .tempdir()?;
        if let Some((uid, gid)) = user {
            nix::unistd::chown(
                dir.path(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )?;
        }
        let data = dir.path().join("data");
        let run = |program: &str| {
            let mut cmd = Command::new(bin.join(program));
            cmd.env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("LC_ALL", "C.UTF-8")
                .current_dir(dir.path());
            if let Some((uid, gid)) = user {
                // As root, std drops the supplementary groups too (setgroups(0)).
                cmd.uid(uid).gid(gid);
            }
            cmd
        };
        let out = run("initdb")
            .args(["--username=postgres", "--auth-local=trust"])
            .args(["--auth-host=scram-sha-256", "--encoding=UTF8", "--no-sync"])
            .arg("-D")
            .arg(&data)
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let port = crate::fleet::free_port()?;
        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        if let Some((uid, gid)) = user {
            nix::unistd::chown(
                &dir.path().join("postgres.log"),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )?;
        }
        let mut cmd = run("postgres");
        cmd.arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("port={port}")])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            // A test database: durability is not what is tested.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=100"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.process_group(0);
        crate::process::die_with_parent(&mut cmd);
        let child = cmd.spawn().context("starting postgres")?;
        let mut me = Self {
            bin,
            dir,
            child: Some(child),
            port,
            password: random_password()?,
        };
        me.wait_accepting()?;
        let sql = format!(
            "CREATE ROLE {APP_USER} LOGIN PASSWORD '{}';\nCREATE DATABASE {APP_DATABASE} OWNER {APP_USER};\n",
            me.password
        );
        me.psql_as_superuser("postgres", &sql)?;
        Ok(me)
    }

    fn wait_accepting(&mut self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!(
                        "postgres exited ({status}) before accepting connections: {}",
                        self.log_tail()
                    );
                }
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(self.dir.path())
                .args(["-p", &self.port.to_string(), "-q"])
                .env_clear()
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "postgres did not accept connections within {START_TIMEOUT:?}: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the server's log.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Where the server listens: 127.0.0.1 and its port.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The app's connection string for a server reached at `host:port` (the server itself, or a
    /// relay to it): `postgres://app:<password>@host:port/app`. A secret: put it in SSM as a
    /// SecureString, never in a log.
    #[must_use]
    pub fn connection_string(&self, host: &str, port: u16) -> String {
        format!(
            "postgres://{APP_USER}:{}@{host}:{port}/{APP_DATABASE}",
            self.password
        )
    }

    /// Runs `sql` (on standard input) in database `database` as the superuser over the Unix
    /// socket; returns what `psql -At` printed (one row per line, columns split by `|`).
    pub fn psql_as_superuser(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let mut child = Command::new("/usr/bin/psql")
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running psql")?;
        child
            .stdin
            .take()
            .context("psql's stdin")?
            .write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "psql failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Applies the sample app's migrations (`examples/app/bin/migrate`, run by the host's `node`
    /// against this server, the connection string in its environment, never in an argument), as
    /// a release's migration does before its instances serve; returns what it printed.
    pub fn migrate_app(&self) -> anyhow::Result<String> {
        let migrate = crate::paths::repo_root().join("examples/app/bin/migrate");
        let out = Command::new("node")
            .arg(&migrate)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env(
                "DB_CONNECTION_STRING",
                self.connection_string("127.0.0.1", self.port),
            )
            .output()
            .with_context(|| format!("running node {}", migrate.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                migrate.display(),
                out.status,
                text.trim()
            );
        }
        Ok(text)
    }

    /// [`Postgres::psql_as_superuser`] in the app's database.
    pub fn query(&self, sql: &str) -> anyhow::Result<String> {
        self.psql_as_superuser(APP_DATABASE, sql)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT: PostgreSQL's "fast" shutdown (clients disconnected, clean stop).
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            crate::process::stop_group(&mut c, Duration::from_secs(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real server: the app's role connects over TCP with its password (and not without),
    /// owns its database, and everything is gone after the drop.
    #[test]
    fn test_postgres_serves_the_app_role_over_tcp_and_is_removed() {
        let pg = Postgres::start().unwrap();
        assert!(!format!("{pg:?}").contains(&pg.password));
        let psql_tcp = |password: &str| {
            Command::new("/usr/bin/psql")
                .args(["-h", "127.0.0.1", "-p", &pg.port.to_string()])
                .args(["-U", APP_USER, "-d", APP_DATABASE, "-X", "-At", "-w"])
                .args(["-c", "SELECT current_user, current_database()"])
                .env_clear()
                .env("PGPASSWORD", password)
                .output()
                .unwrap()
        };
        let ok = psql_tcp(&pg.password);
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "app|app");
        let denied = psql_tcp("wrong");
        assert!(!denied.status.success());
        assert!(
            String::from_utf8_lossy(&denied.stderr).contains("password authentication failed"),
            "{}",
            String::from_utf8_lossy(&denied.stderr)
        );
        assert_eq!(
            pg.query(
                "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'"
            )
            .unwrap(),
            "app"
        );
        let migrated = pg.migrate_app().unwrap();
        assert!(migrated.contains("migrate:"), "{migrated}");
        assert!(!migrated.contains(&pg.password), "{migrated}");
        assert_eq!(
            pg.query("SELECT count(*) FROM schema_migrations").unwrap(),
            std::fs::read_dir(crate::paths::repo_root().join("examples/app/migrations"))
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "sql"))
                .count()
                .to_string()
        );
        assert!(pg.migrate_app().unwrap().contains("up to date"));
        let cs = pg.connection_string("db.example", 5432);
        assert!(cs.starts_with("postgres://app:") && cs.ends_with("@db.example:5432/app"));
        let dir = pg.dir.path().to_path_buf();
        let addr = pg.addr();
        drop(pg);
        assert!(!dir.exists());
        assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    }
}
