//! The image booted instances boot: baked by the real `bake build` with the local target
//! (`examples/local-image/bake.toml`: debootstrap, then packer/scripts/install-app.sh, harden.sh
//! and cleanup.sh), registered in the given emulator as an AMI tagged `bake:local-image`.
//!
//! The configuration is that example file with its paths made absolute and this test run's
//! `bake-agent`, exactly as `bake/tests/local_image.rs` writes it: the same inputs hash, so a
//! test run builds the image once (concurrent builds of one hash wait for each other) and every
//! later build with the same inputs only registers a new AMI record for it (a few seconds).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::paths::{repo_root, workspace_bin};
use crate::Emulator;

/// The longest a build may take: a clean clone's debootstrap plus the provisioning downloads.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// examples/local-image/bake.toml with absolute paths and this run's agent binary.
pub fn local_image_config() -> anyhow::Result<String> {
    local_image_config_with(&workspace_bin("bake-agent"))
}

/// examples/local-image/bake.toml with absolute paths and the agent binary `agent` (e.g. a
/// release build: another inputs hash, so an image of its own).
pub fn local_image_config_with(agent: &Path) -> anyhow::Result<String> {
    let repo = repo_root();
    let repo = std::fs::canonicalize(&repo).unwrap_or(repo);
    let example = repo.join("examples/local-image/bake.toml");
    let text = std::fs::read_to_string(&example)
        .with_context(|| format!("reading {}", example.display()))?;
    let text = text
        .replace(
            "\"../../target/debug/bake-agent\"",
            &format!("{:?}", agent.display().to_string()),
        )
        .replace("\"../../", &format!("\"{}/", repo.display()))
        .replace(
            "\"../app\"",
            &format!("\"{}/examples/app\"", repo.display()),
        );
    if text.contains("\"../") {
        bail!(
            "{}: a relative path is left after rewriting",
            example.display()
        );
    }
    Ok(text)
}

/// Serialises the builds of the repository's template in a test run (this harness, and
/// bake/tests/local_image.rs's build of it): two `bake build`s in one template directory have
/// failed Packer (exit 4) while the other built the image, as Packer's manifest post-processor
/// rewrites one `packer-manifest.json` next to the template; one at a time, the second only
/// registers its AMI record. The wait is bounded by the holder's own [`BUILD_TIMEOUT`].
const BUILD_LOCK: &str = "/run/bake-e2e/image-build.lock";

/// `bake build -o json` of the local image against `emu`: the AMI id.
pub fn bake_local_image(emu: &Emulator) -> anyhow::Result<String> {
    bake_local_image_with(emu, &workspace_bin("bake"), &workspace_bin("bake-agent"))
}

/// [`bake_local_image`] with the given `bake` and `bake-agent` binaries (for programs that do
/// not live in a test's target directory, such as a benchmark).
pub fn bake_local_image_with(emu: &Emulator, bake: &Path, agent: &Path) -> anyhow::Result<String> {
    bake_with_config(emu, bake, &local_image_config_with(agent)?)
}

/// The version examples/app says it is (its `VERSION` file).
pub fn example_app_version() -> anyhow::Result<String> {
    let file = repo_root().join("examples/app/VERSION");
    Ok(std::fs::read_to_string(&file)
        .with_context(|| format!("reading {}", file.display()))?
        .trim()
        .to_owned())
}

/// The local image of app `version`, baked by `bake build` against `emu`: the AMI id (tagged
/// `bake:app-version` = `version`).
///
/// The version examples/app says it is ([`example_app_version`]) is exactly
/// [`bake_local_image`]. Any other is a release cut from examples/app (all of it) with its own
/// `VERSION` file; [`crate::fleet::BROKEN`]'s, [`crate::fleet::CRASHY`]'s, [`crate::fleet::ERRING`]'s and
/// [`crate::fleet::SLOW`]'s are releases with a bug: the first's `/health` never answers 200 (its
/// server.js starts by setting `NEVER_READY`), the second's app exits 5 s after each start (it
/// gets ready, then its agent keeps restarting it), the third answers 500 to one GET / in ten
/// (`ERROR_RATE`), the fourth answers GET / three times later than its `LATENCY_MS` says (10
/// ms when unset); [`crate::fleet::NODB`]'s connects to its database on the wrong port, so its
/// `/health` answers 503. The release is hashed by content, so each version
/// is built once per work directory and reused by every later run.
pub fn bake_version_image(emu: &Emulator, version: &str) -> anyhow::Result<String> {
    if version == example_app_version()? {
        return bake_local_image(emu);
    }
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        bail!("app version {version:?}: only letters, digits, '.', '_' and '-'");
    }
    let release = tempfile::Builder::new().prefix("bake-release-").tempdir()?;
    // The whole release: its commands (bin/), migrations and installed packages
    // (node_modules/, `npm ci` by tools/setup) with it.
    let src = repo_root().join("examples/app");
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(src.join("."))
        .arg(release.path())
        .output()
        .context("running cp")?;
    if !out.status.success() {
        bail!(
            "copying {} into the release: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::write(release.path().join("VERSION"), format!("{version}\n"))?;
    let bug = match version {
        crate::fleet::BROKEN => {
            Some("process.env.NEVER_READY = '1'; // this release's bug: never healthy")
        }
        crate::fleet::CRASHY => Some(
            "setTimeout(() => { console.error('exiting: this release crashes 5 s after start'); \
             process.exit(1); }, 5000); // this release's bug",
        ),
        crate::fleet::ERRING => {
            Some("process.env.ERROR_RATE = '0.1'; // this release's bug: one GET / in ten is a 500")
        }
        crate::fleet::NODB => Some(
            "process.env.DB_CONNECTION_STRING = (process.env.DB_CONNECTION_STRING || '')\
             .replace(':5432/', ':5433/'); // this release's bug: the wrong database port",
        ),
        crate::fleet::SLOW => Some(
            "process.env.LATENCY_MS = String(3 * Number(process.env.LATENCY_MS || '10')); \
             // this release's bug: three times slower",
        ),
        _ => None,
    };
    if let Some(bug) = bug {
        let server = release.path().join("server.js");
        let original = std::fs::read_to_string(&server)?;
        let code = original.replacen("'use strict';\n", &format!("'use strict';\n{bug}\n"), 1);
        if code == original {
            bail!(
                "{}: no 'use strict' line to put the bug after",
                server.display()
            );
        }
        std::fs::write(&server, code)?;
    }
    let repo = std::fs::canonicalize(repo_root()).unwrap_or_else(|_| repo_root());
    let example_release = format!("release = \"{}/examples/app\"", repo.display());
    let example_version = format!("version = \"{}\"", example_app_version()?);
    let config = local_image_config()?;
    if !config.lines().any(|l| l == example_release)
        || !config.lines().any(|l| l == example_version)
    {
        bail!("examples/local-image/bake.toml has no lines {example_release:?} and {example_version:?}");
    }
    let config = config
        .lines()
        .map(|l| {
            if l == example_release {
                format!("release = \"{}\"", release.path().display())
            } else if l == example_version {
                format!("version = \"{version}\"")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    bake_with_config(emu, &workspace_bin("bake"), &config)
}

/// `bake build -o json` by `bake` with the configuration `config` against `emu`: the AMI id.
fn bake_with_config(emu: &Emulator, bake: &Path, config: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all("/run/bake-e2e")?;
    let lock =
        std::fs::File::create(BUILD_LOCK).with_context(|| format!("creating {BUILD_LOCK}"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking {BUILD_LOCK}: {e}"))?;
    let dir = tempfile::Builder::new().prefix("bake-image-").tempdir()?;
    std::fs::write(dir.path().join("bake.toml"), config)?;
    std::fs::create_dir_all(dir.path().join("tmp"))?;
    let out_path = dir.path().join("build.json");
    let err_path = dir.path().join("build.log");
    let mut cmd = Command::new(bake);
    cmd.args(["build", "-o", "json"])
        .current_dir(dir.path())
        .env_remove("BAKE_CONFIG")
        .env_remove("RUST_LOG")
        .env("TMPDIR", dir.path().join("tmp"))
        .env("CHECKPOINT_DISABLE", "1")
        .envs(emu.env())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    crate::process::die_with_parent(&mut cmd);
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting bake build")?;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            crate::process::stop_group(&mut child, Duration::from_secs(10));
            bail!(
                "bake build did not finish within {BUILD_TIMEOUT:?}: {}",
                tail(&err_path)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        bail!("bake build failed ({status}): {}", tail(&err_path));
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_path)?)
        .with_context(|| format!("bake build's JSON: {}", tail(&out_path)))?;
    json["image_id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no image_id in bake build's output {json}"))
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
