//! EFS: mount options (pure), the mountinfo check (idempotence), DNS retry and the mount itself.
//!
//! With the efs mount helper (amazon-efs-utils, `/sbin/mount.efs`):
//! `mount -t efs -o tls[,accesspoint=fsap-…] fs-…:/ MOUNT_POINT`. Without it: NFS 4.1 to
//! `fs-….efs.REGION.amazonaws.com:/` with AWS's recommended options
//! (<https://docs.aws.amazon.com/efs/latest/ug/mounting-fs-nfs-mount-settings.html>).
//! The mount is made by `bake-agent mount` ([`run`]), systemd's `ExecStartPre=+` of
//! bake-agent.service: outside the daemon's sandbox, in the instance's mount namespace, so the
//! daemon itself needs neither CAP_SYS_ADMIN nor mount(2) and runs in a read-only namespace of
//! its own, which sees the mount (it is made before the daemon starts, and later mounts
//! propagate into it). The daemon only checks that it is there ([`check_mounted`]).
//! The [`Mounter`] trait exists only because the kernel that runs our tests has no NFS client:
//! tests swap in a tmpfs mount and keep the rest of the path (mountinfo, DNS retry, verification).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::EfsSettings;
use crate::exit::{coded, Exit};
use crate::imds::Imds;

/// AWS's recommended NFS options for EFS.
pub const NFS_OPTIONS: &[&str] = &[
    "nfsvers=4.1",
    "rsize=1048576",
    "wsize=1048576",
    "hard",
    "timeo=600",
    "retrans=2",
    "noresvport",
];

/// Where the efs mount helper lives when amazon-efs-utils is installed.
pub const EFS_HELPER: &str = "/sbin/mount.efs";

/// Errors mounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// An access point without the efs helper.
    #[error("efs.access_point {0} needs the efs mount helper ({EFS_HELPER}, amazon-efs-utils); plain NFS cannot use access points")]
    AccessPointNeedsHelper(String),
    /// DNS never resolved within the budget.
    #[error("the mount target {name} did not resolve within {secs}s: {last}")]
    Dns {
        /// The name.
        name: String,
        /// Budget.
        secs: u64,
        /// Last resolver error.
        last: String,
    },
    /// The mount failed.
    #[error("mounting {source_spec} on {target}: {message}")]
    Mount {
        /// `fs-…:/`.
        source_spec: String,
        /// Mount point.
        target: PathBuf,
        /// Why.
        message: String,
    },
    /// The daemon found nothing mounted at the mount point.
    #[error("efs.mount_point {0} is not mounted: `bake-agent mount` (ExecStartPre of bake-agent.service) mounts it before the daemon starts")]
    NotMounted(PathBuf),
    /// Reading /proc/self/mountinfo or creating the mount point failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A mount to make: everything `mount(8)` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// `fs-…:/` or `fs-….efs.REGION.amazonaws.com:/`.
    pub source: String,
    /// `efs` or `nfs4`.
    pub fstype: String,
    /// `-o` options.
    pub options: Vec<String>,
    /// Mount point.
    pub target: PathBuf,
    /// The name that must resolve before mounting.
    pub dns_name: String,
}

/// Builds the mount for `efs` in `region`, with or without the efs helper.
pub fn spec(efs: &EfsSettings, region: &str, helper: bool) -> Result<MountSpec, MountError> {
    let dns_name = format!("{}.efs.{region}.amazonaws.com", efs.file_system_id);
    if helper {
        let mut options = vec!["tls".to_owned()];
        if let Some(ap) = &efs.access_point {
            options.push(format!("accesspoint={ap}"));
        }
        Ok(MountSpec {
            source: format!("{}:/", efs.file_system_id),
            fstype: "efs".into(),
            options,
            target: efs.mount_point.clone(),
            dns_name,
        })
    } else {
        if let Some(ap) = &efs.access_point {
            return Err(MountError::AccessPointNeedsHelper(ap.clone()));
        }
        Ok(MountSpec {
            source: format!("{dns_name}:/"),
            fstype: "nfs4".into(),
            options: NFS_OPTIONS.iter().map(|s| (*s).to_owned()).collect(),
            target: efs.mount_point.clone(),
            dns_name,
        })
    }
}

/// One line of /proc/self/mountinfo, the fields we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point, unescaped.
    pub mount_point: PathBuf,
    /// File system type.
    pub fstype: String,
    /// Mount source.
    pub source: String,
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
#[must_use]
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let source = post.next().unwrap_or("");
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fstype: fstype.to_owned(),
                source: unescape(source),
            })
        })
        .collect()
}

/// What is mounted at `target` now (the last, i.e. topmost, mount), if anything.
pub fn mounted_at(target: &Path) -> Result<Option<MountEntry>, MountError> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| MountError::Io {
            what: "reading /proc/self/mountinfo".into(),
            source,
        })?;
    Ok(parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == target))
}

/// Does the mount. Production: [`CommandMounter`]; tests: a tmpfs.
pub trait Mounter {
    /// Mounts `spec`; the mount point exists.
    fn mount(&self, spec: &MountSpec) -> impl Future<Output = Result<(), MountError>> + Send;
}

/// Runs `mount -t TYPE -o OPTIONS SOURCE TARGET`: `mount.nfs4` and `mount.efs` do the protocol
/// work (address resolution, TLS tunnel) that a bare mount(2) cannot.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommandMounter;

impl Mounter for CommandMounter {
    async fn mount(&self, spec: &MountSpec) -> Result<(), MountError> {
        let out = tokio::process::Command::new("mount")
            .arg("-t")
            .arg(&spec.fstype)
            .arg("-o")
            .arg(spec.options.join(","))
            .arg(&spec.source)
            .arg(&spec.target)
            .output()
            .await
            .map_err(|e| MountError::Mount {
                source_spec: spec.source.clone(),
                target: spec.target.clone(),
                message: format!("running mount: {e}"),
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(MountError::Mount {
                source_spec: spec.source.clone(),
                target: spec.target.clone(),
                message: format!(
                    "mount exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
        }
    }
}

/// The retry delays for DNS: 0.25s, 0.5s, 1s, 2s, 4s, then every 5s until the budget is spent.
#[must_use]
pub fn dns_delay(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5))
}

/// Calls `resolve` until it succeeds or `budget` is spent, sleeping [`dns_delay`] in between.
pub async fn resolve_with_retry<F, Fut>(
    name: &str,
    budget: Duration,
    mut resolve: F,
) -> Result<u32, MountError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        let result = tokio::time::timeout(Duration::from_secs(5), resolve(name.to_owned())).await;
        let err = match result {
            Ok(Ok(())) => return Ok(attempt),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        let delay = dns_delay(attempt);
        if start.elapsed() + delay > budget {
            return Err(MountError::Dns {
                name: name.to_owned(),
                secs: budget.as_secs(),
                last: err,
            });
        }
        tracing::warn!(name, attempt, error = %err, "mount target does not resolve yet; retrying");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// Resolves with the system resolver (port 2049, NFS).
pub async fn system_resolve(name: String) -> std::io::Result<()> {
    let mut addrs = tokio::net::lookup_host((name.as_str(), 2049)).await?;
    addrs
        .next()
        .map(|_| ())
        .ok_or_else(|| std::io::Error::other("no addresses"))
}

/// Mounts `spec` unless already mounted: mountinfo check, DNS retry, mkdir, mount, verify.
/// Returns `false` when it was already mounted.
pub async fn ensure_mounted<M, F, Fut>(
    spec: &MountSpec,
    mounter: &M,
    budget: Duration,
    resolve: F,
) -> Result<bool, MountError>
where
    M: Mounter,
    F: FnMut(String) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    if let Some(m) = mounted_at(&spec.target)? {
        if m.fstype != spec.fstype && !(spec.fstype == "efs" && m.fstype.starts_with("nfs")) {
            tracing::warn!(target = %spec.target.display(), found = %m.fstype, "something else is mounted at the EFS mount point; leaving it");
        }
        return Ok(false);
    }
    resolve_with_retry(&spec.dns_name, budget, resolve).await?;
    std::fs::create_dir_all(&spec.target).map_err(|source| MountError::Io {
        what: format!("creating {}", spec.target.display()),
        source,
    })?;
    mounter.mount(spec).await?;
    if mounted_at(&spec.target)?.is_none() {
        return Err(MountError::Mount {
            source_spec: spec.source.clone(),
            target: spec.target.clone(),
            message: "mount reported success but nothing is mounted there".into(),
        });
    }
    Ok(true)
}

/// `bake-agent mount`: reads the configuration as `run` does (baked file + userdata from IMDS)
/// and mounts `[efs]` at its mount point: mountinfo check (already mounted: nothing to do), DNS
/// retried within `[efs] timeout`, mount, verification. Without `[efs]`: nothing to do.
/// Exit codes: 0 mounted or nothing to do, 2 configuration (also an access point without the
/// efs helper), 4 IMDS, 6 the mount failed.
pub async fn run(config: &Path) -> anyhow::Result<Exit> {
    let imds = Imds::from_env();
    let settings = crate::config::load_on_instance(config, &imds).await?;
    let Some(efs) = &settings.efs else {
        tracing::info!(config = %settings.origin, "no [efs]: nothing to mount");
        return Ok(Exit::Ok);
    };
    let t = Instant::now();
    let identity = crate::identity::from_imds(&imds)
        .await
        .map_err(|e| coded(Exit::Imds, e))?;
    let helper = Path::new(EFS_HELPER).exists();
    let spec = spec(efs, &identity.region, helper).map_err(|e| coded(Exit::Config, e))?;
    let fresh = ensure_mounted(&spec, &CommandMounter, efs.timeout, system_resolve)
        .await
        .map_err(|e| coded(Exit::Mount, e))?;
    tracing::info!(step = "mount", target = %spec.target.display(), fstype = %spec.fstype,
        already = !fresh, elapsed_ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX),
        "boot step done");
    Ok(Exit::Ok)
}

/// The daemon's check: what is mounted at `efs.mount_point`, or [`MountError::NotMounted`].
pub fn check_mounted(efs: &EfsSettings) -> Result<MountEntry, MountError> {
    mounted_at(&efs.mount_point)?.ok_or_else(|| MountError::NotMounted(efs.mount_point.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn efs(ap: Option<&str>) -> EfsSettings {
        EfsSettings {
            file_system_id: "fs-0abc".into(),
            access_point: ap.map(Into::into),
            mount_point: "/mnt/efs".into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn test_nfs_options_without_helper() {
        let s = spec(&efs(None), "eu-west-1", false).unwrap();
        assert_eq!(s.fstype, "nfs4");
        assert_eq!(s.source, "fs-0abc.efs.eu-west-1.amazonaws.com:/");
        assert_eq!(
            s.options.join(","),
            "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"
        );
        assert!(spec(&efs(Some("fsap-1")), "eu-west-1", false)
            .unwrap_err()
            .to_string()
            .contains("fsap-1"));
    }

    #[test]
    fn test_efs_helper_options() {
        let s = spec(&efs(Some("fsap-01")), "us-east-1", true).unwrap();
        assert_eq!((s.fstype.as_str(), s.source.as_str()), ("efs", "fs-0abc:/"));
        assert_eq!(
            s.options,
            vec!["tls".to_owned(), "accesspoint=fsap-01".to_owned()]
        );
        assert_eq!(s.dns_name, "fs-0abc.efs.us-east-1.amazonaws.com");
    }

    #[test]
    fn test_parse_mountinfo() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 1 0:5 / /mnt/efs rw shared:2 - nfs4 fs-1.efs.x.amazonaws.com:/ rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[1].fstype, "nfs4");
        assert_eq!(m[1].source, "fs-1.efs.x.amazonaws.com:/");
    }

    #[test]
    fn test_dns_delays() {
        let d: Vec<u64> = (0..8)
            .map(|a| u64::try_from(dns_delay(a).as_millis()).unwrap())
            .collect();
        assert_eq!(d, vec![250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }

    #[tokio::test]
    async fn test_dns_retried_until_resolves_or_budget() {
        let calls = AtomicU32::new(0);
        let n = resolve_with_retry("x", Duration::from_secs(60), |_| {
            let c = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if c < 3 {
                    Err(std::io::Error::other("NXDOMAIN"))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(n, 3);
        let e = resolve_with_retry("fs-1.efs", Duration::from_secs(2), |_| async {
            Err(std::io::Error::other("NXDOMAIN"))
        })
        .await
        .unwrap_err();
        assert!(
            e.to_string().contains("fs-1.efs") && e.to_string().contains("NXDOMAIN"),
            "{e}"
        );
    }

    /// Stands in for NFS, which this kernel lacks: a tmpfs through the same mount(2) path.
    struct TmpfsMounter;
    impl Mounter for TmpfsMounter {
        async fn mount(&self, spec: &MountSpec) -> Result<(), MountError> {
            nix::mount::mount(
                Some("tmpfs"),
                &spec.target,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=1m"),
            )
            .map_err(|e| MountError::Mount {
                source_spec: spec.source.clone(),
                target: spec.target.clone(),
                message: e.to_string(),
            })
        }
    }

    /// Unmounts (lazily) when dropped, so a failing assertion leaves no mount behind.
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// Mounts for real, so it needs root (CI and the development machines run the tests as
    /// root): without it the mount fails and so does the test.
    #[tokio::test]
    async fn test_ensure_mounted_is_idempotent() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "mounting needs root: run the tests as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(&efs(None), "us-east-1", false).unwrap();
        s.target = dir.path().join("efs");
        s.fstype = "tmpfs".into();
        let ok = |_| async { Ok(()) };
        let mounts_there = || {
            let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            parse_mountinfo(&text)
                .iter()
                .filter(|m| m.mount_point == s.target)
                .count()
        };
        assert!(
            ensure_mounted(&s, &TmpfsMounter, Duration::from_secs(1), ok)
                .await
                .unwrap()
        );
        let _unmount = Unmount(s.target.clone());
        assert_eq!(mounts_there(), 1);
        std::fs::write(s.target.join("f"), "x").unwrap();
        // Second call sees it in mountinfo and does nothing (a second tmpfs would hide the file).
        assert!(
            !ensure_mounted(&s, &TmpfsMounter, Duration::from_secs(1), ok)
                .await
                .unwrap()
        );
        assert_eq!(mounts_there(), 1, "mounted a second time");
        assert!(s.target.join("f").exists());
        nix::mount::umount(&s.target).unwrap();
        assert_eq!(mounts_there(), 0);
    }
}
