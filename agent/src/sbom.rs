//! `bake-agent sbom`: the image's software bill of materials, written inside the image at the
//! end of its build (packer/scripts/cleanup.sh, after the last package change).
//!
//! What it lists (CycloneDX 1.5, see [`bake_common::sbom`]):
//! - the operating system's packages: the dpkg database (`var/lib/dpkg/status`, Debian) or
//!   rpm's (`rpm --root ROOT -qa`, Amazon Linux), every installed package with its version
//!   and architecture;
//! - the app's npm packages: the entries of `package-lock.json` in the app directory that are
//!   installed there (when `node_modules` exists: exactly those whose directory exists; without
//!   it: the non-development entries), and the app itself;
//! - the agent's crates: the closure of its dependencies in the workspace's Cargo.lock,
//!   embedded at compile time (agent/build.rs), and the agent itself.

use std::path::{Path, PathBuf};

use bake_common::sbom::{self, Bom, Component, Hash};

use crate::exit::{coded, Exit};

/// The agent's crates: `name TAB version TAB source TAB checksum` lines (agent/build.rs).
const CRATES: &str = include_str!(concat!(env!("OUT_DIR"), "/crates.tsv"));

/// Where the build keeps the image's SBOM (packer/scripts/cleanup.sh).
pub const DEFAULT_OUTPUT: &str = "/usr/share/bake/sbom.cdx.json";

/// What `bake-agent sbom` looks at.
#[derive(Clone, Debug)]
pub struct Options {
    /// The root file system to describe (`/` on the build instance).
    pub root: PathBuf,
    /// The app's directory, inside the root.
    pub app_dir: PathBuf,
    /// The `rpm` program, for an rpm-based root.
    pub rpm: PathBuf,
}

/// `path` (absolute or not) inside `root`.
fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// `KEY=value` of an os-release file, unquoted.
fn os_release(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim().trim_matches('"').trim_matches('\'').to_owned())
    })
}

fn application(name: &str, version: &str) -> Component {
    Component::package("application", "generic", None, name, version, &[])
}

/// An installed package: name, version, architecture.
type Installed = (String, String, String);

/// The operating system's packages and their purl type (`deb`, `rpm`).
fn os_packages(opts: &Options, id: &str) -> anyhow::Result<(&'static str, Vec<Installed>)> {
    let status = inside(&opts.root, Path::new("/var/lib/dpkg/status"));
    if status.is_file() {
        let text = std::fs::read_to_string(&status)
            .map_err(|e| anyhow::anyhow!("cannot read '{}': {e}", status.display()))?;
        return Ok(("deb", sbom::dpkg_installed(&text)));
    }
    if inside(&opts.root, Path::new("/var/lib/rpm")).is_dir() {
        let out = std::process::Command::new(&opts.rpm)
            .arg("--root")
            .arg(&opts.root)
            .args([
                "-qa",
                "--qf",
                "%{NAME}\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\n",
            ])
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", opts.rpm.display()))?;
        if !out.status.success() {
            anyhow::bail!(
                "{} -qa: {}: {}",
                opts.rpm.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut pkgs: Vec<Installed> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let (n, v, a) = (f.next()?, f.next()?, f.next()?);
                // An epoch of 0 is not written (rpm's own convention).
                let v = v.strip_prefix("0:").unwrap_or(v);
                (n != "gpg-pubkey").then(|| (n.to_owned(), v.to_owned(), a.to_owned()))
            })
            .collect();
        pkgs.sort();
        return Ok(("rpm", pkgs));
    }
    anyhow::bail!(
        "no package database under '{}' (neither var/lib/dpkg/status nor var/lib/rpm) for {id}",
        opts.root.display()
    )
}

/// The app's npm packages and the app itself (none without a `package-lock.json`).
fn app_packages(opts: &Options) -> anyhow::Result<Vec<Component>> {
    let dir = inside(&opts.root, &opts.app_dir);
    let lock = dir.join("package-lock.json");
    if !lock.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&lock)
        .map_err(|e| anyhow::anyhow!("cannot read '{}': {e}", lock.display()))?;
    let parsed = sbom::npm_lock(&text).map_err(|e| anyhow::anyhow!("'{}': {e}", lock.display()))?;
    let installed = dir.join("node_modules").is_dir();
    let mut out = vec![application(
        parsed.name.as_deref().unwrap_or("app"),
        parsed.version.as_deref().unwrap_or("unknown"),
    )];
    for e in parsed.packages {
        let keep = if installed {
            dir.join(&e.path).is_dir()
        } else {
            !e.dev
        };
        if keep && !e.version.is_empty() {
            out.push(Component::package(
                "library",
                "npm",
                None,
                &e.name,
                &e.version,
                &[],
            ));
        }
    }
    Ok(out)
}

/// The agent itself and its registry crates.
fn agent_crates() -> Vec<Component> {
    let mut out = vec![application(
        "bake-agent",
        &format!(
            "{}+{}",
            env!("CARGO_PKG_VERSION"),
            bake_common::version::GIT_COMMIT
        ),
    )];
    for line in CRATES.lines() {
        let mut f = line.split('\t');
        let (Some(name), Some(version), Some(source)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if source == "workspace" {
            continue; // the agent's own code (bake-common)
        }
        let mut c = Component::package("library", "cargo", None, name, version, &[]);
        if let Some(sum) = f.next().filter(|s| !s.is_empty()) {
            c.hashes.push(Hash {
                alg: "SHA-256".to_owned(),
                content: sum.to_owned(),
            });
        }
        out.push(c);
    }
    out
}

fn uuid_v4() -> String {
    let mut b: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The SBOM of the root file system.
///
/// # Errors
/// No package database, an unreadable one, or an unreadable lockfile.
pub fn collect(opts: &Options) -> anyhow::Result<Bom> {
    let release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(inside(&opts.root, Path::new(p))).ok())
        .unwrap_or_default();
    let id = os_release(&release, "ID").unwrap_or_else(|| "linux".to_owned());
    let version_id = os_release(&release, "VERSION_ID").unwrap_or_default();
    let (kind, pkgs) = os_packages(opts, &id)?;
    let distro = format!("{id}-{version_id}");
    let mut components: Vec<Component> = pkgs
        .iter()
        .map(|(n, v, a)| {
            Component::package(
                "library",
                kind,
                Some(&id),
                n,
                v,
                &[("arch", a), ("distro", &distro)],
            )
        })
        .collect();
    components.extend(app_packages(opts)?);
    components.extend(agent_crates());
    let subject = Component::new("operating-system", &id, &version_id);
    let tool = application("bake-agent", env!("CARGO_PKG_VERSION"));
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok(Bom::new(&uuid_v4(), &now, tool, subject, components))
}

/// `bake-agent sbom`: writes the document to `output` (0644, replaced atomically) or stdout;
/// with `frame`, also prints it framed for bake ([`bake_common::sbom::frame`]).
pub fn run(opts: &Options, output: Option<&Path>, frame: bool) -> anyhow::Result<Exit> {
    let bom = collect(opts).map_err(|e| coded(Exit::Config, e))?;
    let mut json = serde_json::to_vec_pretty(&bom)?;
    json.push(b'\n');
    match output {
        Some(path) => {
            write_atomically(path, &json).map_err(|e| {
                coded(
                    Exit::Config,
                    format!("cannot write the SBOM to '{}': {e}", path.display()),
                )
            })?;
            let counts = bom.counts();
            tracing::info!(path = %path.display(), components = bom.components.len(), "SBOM written: {counts:?}");
        }
        None if !frame => {
            use std::io::Write as _;
            std::io::stdout().write_all(&json)?;
        }
        None => {}
    }
    if frame {
        print!("{}", sbom::frame(&json));
    }
    Ok(Exit::Ok)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_the_agents_crates_are_its_lockfile_closure_without_dev_dependencies() {
        let crates = agent_crates();
        let names: Vec<&str> = crates.iter().map(|c| c.name.as_str()).collect();
        for dep in ["tokio", "aws-sdk-ssm", "hyper", "serde", "nix"] {
            assert!(names.contains(&dep), "{dep} missing: {names:?}");
        }
        // Development dependencies only (of the agent, of bake-common) are not the agent's.
        for dev in ["proptest", "tempfile", "bake-e2e", "aws-sdk-ec2"] {
            assert!(!names.contains(&dev), "{dev} listed");
        }
        // Registry crates carry their lockfile checksum.
        let tokio = crates.iter().find(|c| c.name == "tokio").unwrap();
        assert_eq!(tokio.hashes[0].alg, "SHA-256");
        assert_eq!(tokio.hashes[0].content.len(), 64);
        assert!(tokio
            .purl
            .as_deref()
            .unwrap()
            .starts_with("pkg:cargo/tokio@"));
        assert_eq!(crates[0].name, "bake-agent");
    }

    #[test]
    fn test_os_release_values() {
        let t = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";
        assert_eq!(os_release(t, "ID").as_deref(), Some("debian"));
        assert_eq!(os_release(t, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(os_release(t, "NAME"), None);
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
