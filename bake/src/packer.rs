//! Running Packer: the version probe that picks the invocation, `packer validate`, and
//! `packer build -machine-readable` with its progress streamed and its artifacts parsed.
//!
//! Packer 1.6.6 (Debian) has its builders built in, takes a single TEMPLATE argument and rejects
//! a `required_plugins` block; current Packer (1.7+) needs `required_plugins` and `packer init`.
//! So a template directory keeps `required_plugins` in a file of its own: for old Packer, bake
//! stages a directory of symlinks to every entry except the files that mention
//! `required_plugins`; for current Packer it runs `packer init DIR` and uses the directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::output::Progress;

/// Variables bake sets itself; `packer.variables` may not set them.
pub const RESERVED_VARIABLES: &[&str] = &[
    "app_release",
    "agent_binary",
    "region",
    "bake_inputs_hash",
    "bake_git_commit",
    "bake_version",
    "bake_built_at",
    "app_version",
    "local_root",
    "local_cache_dir",
];

/// How long Packer gets to clean up after an interrupt before it is killed.
pub const CLEANUP_GRACE: Duration = Duration::from_secs(300);

/// Errors of Packer runs.
#[derive(Debug, thiserror::Error)]
pub enum PackerError {
    /// The executable is missing or cannot run.
    #[error("cannot run '{binary}': {source}")]
    Spawn {
        /// The executable.
        binary: String,
        /// Why.
        source: std::io::Error,
    },
    /// There is no such executable: on `PATH` (a bare name) or at the path `packer.binary`
    /// gives.
    #[error("{}", not_found(.binary))]
    NotFound {
        /// `packer.binary` (default `packer`).
        binary: PathBuf,
    },
    /// `packer version` printed something unexpected.
    #[error("cannot tell the version of '{binary}' from {output:?}")]
    Version {
        /// The executable.
        binary: String,
        /// What it printed.
        output: String,
    },
    /// The template path is not usable.
    #[error("packer.template: '{path}': {message}")]
    Template {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `packer init`, `validate` or `build` failed.
    #[error("packer {command} failed ({status}): {message}")]
    Failed {
        /// `init`, `validate` or `build`.
        command: &'static str,
        /// The exit status.
        status: String,
        /// Packer's last error lines.
        message: String,
    },
    /// The build was interrupted; Packer cleaned up.
    #[error("packer build interrupted; Packer removed its temporary instance, key pair and security group")]
    Interrupted,
    /// The build took longer than `packer.timeout`.
    #[error("packer build took longer than packer.timeout ({0}); it was stopped")]
    TimedOut(String),
    /// The build succeeded but named no AMI.
    #[error("packer build finished without an AMI artifact")]
    NoArtifact,
    /// I/O on the staging directory or Packer's output.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A Packer version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses `packer version` output: `Packer v1.6.6` (+ maybe more lines).
    #[must_use]
    pub fn parse(output: &str) -> Option<Self> {
        let v = output
            .split_whitespace()
            .find_map(|w| w.strip_prefix('v'))?;
        let mut parts = v
            .split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Self(major, minor, patch))
    }

    /// Packer 1.7 introduced `packer init` and `required_plugins`.
    #[must_use]
    pub fn needs_init(self) -> bool {
        self >= Version(1, 7, 0)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The message of [`PackerError::NotFound`], with how to install Packer.
fn not_found(binary: &Path) -> String {
    if binary.components().count() > 1 {
        format!(
            "packer.binary: '{}' does not exist or is not executable: install Packer (Debian and \
             Ubuntu: 'apt install packer'; elsewhere https://developer.hashicorp.com/packer/install) \
             or correct packer.binary in bake.toml",
            binary.display()
        )
    } else {
        format!(
            "no '{}' on PATH: install Packer (Debian and Ubuntu: 'apt install packer'; elsewhere \
             https://developer.hashicorp.com/packer/install) or set packer.binary in bake.toml to \
             its path",
            binary.display()
        )
    }
}

/// The executable `binary` names (a path, or a bare name looked up on `PATH` as a shell
/// does), without running it: checked before any AWS call of a command that builds.
///
/// # Errors
/// [`PackerError::NotFound`].
pub fn locate(binary: &Path) -> Result<PathBuf, PackerError> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if binary.components().count() > 1 {
        runnable(binary).then(|| binary.to_owned())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(binary))
                .find(|p| runnable(p))
        })
    };
    found.ok_or_else(|| PackerError::NotFound {
        binary: binary.to_owned(),
    })
}

/// Runs `packer version`.
pub async fn version(binary: &Path) -> Result<Version, PackerError> {
    let out = Command::new(binary)
        .arg("version")
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => PackerError::NotFound {
                binary: binary.to_owned(),
            },
            _ => PackerError::Spawn {
                binary: binary.display().to_string(),
                source,
            },
        })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Version::parse(&text).ok_or_else(|| PackerError::Version {
        binary: binary.display().to_string(),
        output: text,
    })
}

/// The template as Packer is to be given it.
#[derive(Debug)]
pub struct Invocation {
    /// The path passed as TEMPLATE.
    pub path: PathBuf,
    /// Run `packer init` first.
    pub init: bool,
    /// The working directory (the template's directory).
    pub workdir: PathBuf,
    /// Variable names the template declares.
    pub declared: Vec<String>,
    /// Local value names the template declares.
    pub locals: Vec<String>,
    /// Keeps the staging directory (old Packer) alive.
    _staging: Option<tempfile::TempDir>,
}

/// Whether a template file has a `required_plugins` block (current Packer only).
fn has_required_plugins(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        !l.starts_with('#') && !l.starts_with("//") && l.starts_with("required_plugins")
    })
}

/// Names declared in `locals { NAME = … }` blocks of `text` (attributes at the block's top level).
fn declared_locals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut in_locals = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.starts_with("//") {
            continue;
        }
        if depth == 0 && t.starts_with("locals") && t.ends_with('{') {
            in_locals = true;
        } else if in_locals && depth == 1 {
            if let Some((name, _)) = t.split_once('=') {
                let name = name.trim();
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    out.push(name.to_owned());
                }
            }
        }
        let opens = t.matches('{').count();
        let closes = t.matches('}').count();
        depth = (depth + opens).saturating_sub(closes);
        if depth == 0 {
            in_locals = false;
        }
    }
    out
}

/// Variable names declared with `variable "NAME" {` in `text`.
fn declared_variables(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("variable")?.trim_start();
            let rest = rest.strip_prefix('"')?;
            Some(rest.split('"').next()?.to_owned())
        })
        .collect()
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PackerError {
    let what = what.into();
    move |source| PackerError::Io { what, source }
}

/// The HCL files of a template directory, sorted.
fn hcl_files(dir: &Path) -> Result<Vec<PathBuf>, PackerError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(format!(
            "reading template directory '{}'",
            dir.display()
        )))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".pkr.hcl"))
        .collect();
    files.sort();
    Ok(files)
}

/// Picks the invocation for `version` on `template` (a directory or one `.pkr.hcl` file).
pub fn invocation(template: &Path, version: Version) -> Result<Invocation, PackerError> {
    let meta = std::fs::metadata(template).map_err(|e| PackerError::Template {
        path: template.to_path_buf(),
        message: e.to_string(),
    })?;
    if meta.is_file() {
        let text = std::fs::read_to_string(template)
            .map_err(io(format!("reading '{}'", template.display())))?;
        if !version.needs_init() && has_required_plugins(&text) {
            return Err(PackerError::Template {
                path: template.to_path_buf(),
                message: format!(
                    "has a required_plugins block, which Packer {version} rejects: move it to a file of its own in a template directory"
                ),
            });
        }
        let workdir = template
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        return Ok(Invocation {
            path: template.to_path_buf(),
            init: version.needs_init(),
            workdir,
            declared: declared_variables(&text),
            locals: declared_locals(&text),
            _staging: None,
        });
    }
    let files = hcl_files(template)?;
    if files.is_empty() {
        return Err(PackerError::Template {
            path: template.to_path_buf(),
            message: "no *.pkr.hcl files".into(),
        });
    }
    let mut declared = Vec::new();
    let mut locals = Vec::new();
    let mut excluded = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(io(format!("reading '{}'", f.display())))?;
        declared.extend(declared_variables(&text));
        locals.extend(declared_locals(&text));
        if has_required_plugins(&text) {
            excluded.push(f.clone());
        }
    }
    if version.needs_init() {
        return Ok(Invocation {
            path: template.to_path_buf(),
            init: true,
            workdir: template.to_path_buf(),
            declared,
            locals,
            _staging: None,
        });
    }
    // Packer < 1.7 takes one TEMPLATE (a file or directory): stage a directory of symlinks to
    // everything but the required_plugins files, so `path.root`-relative scripts still resolve.
    // It is a sibling of the template directory so that `${path.root}/../systemd` and the like
    // resolve as they do from the template directory itself.
    let parent = template
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".bake-packer-")
        .tempdir_in(parent)
        .map_err(io("creating a staging directory"))?;
    for entry in
        std::fs::read_dir(template).map_err(io(format!("reading '{}'", template.display())))?
    {
        let entry = entry.map_err(io(format!("reading '{}'", template.display())))?;
        let p = entry.path();
        if excluded.contains(&p) {
            continue;
        }
        std::os::unix::fs::symlink(&p, staging.path().join(entry.file_name())).map_err(io(
            format!("linking '{}' into the staging directory", p.display()),
        ))?;
    }
    Ok(Invocation {
        path: staging.path().to_path_buf(),
        init: false,
        workdir: template.to_path_buf(),
        declared,
        locals,
        _staging: Some(staging),
    })
}

/// `-var` arguments: bake's own variables only if the template declares them (bake tags the AMI
/// itself too), the user's always (Packer names an undeclared one).
#[must_use]
pub fn var_args(
    inv: &Invocation,
    own: &BTreeMap<String, String>,
    user: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut args = Vec::new();
    for (k, v) in own {
        if inv.declared.iter().any(|d| d == k) {
            args.push("-var".to_owned());
            args.push(format!("{k}={v}"));
        } else {
            tracing::debug!(variable = %k, "template does not declare it; not passed");
        }
    }
    for (k, v) in user {
        args.push("-var".to_owned());
        args.push(format!("{k}={v}"));
    }
    args
}

/// Runs `packer SUBCOMMAND ARGS… PATH` in the invocation's directory to its end; a failure
/// carries Packer's stdout and stderr.
async fn run_to_end(
    binary: &Path,
    inv: &Invocation,
    command: &'static str,
    args: &[String],
) -> Result<(), PackerError> {
    let out = Command::new(binary)
        .arg(command)
        .args(args)
        .arg(&inv.path)
        .current_dir(&inv.workdir)
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| PackerError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.trim().is_empty() {
            if !msg.is_empty() {
                msg.push('\n');
            }
            msg.push_str(err.trim());
        }
        return Err(PackerError::Failed {
            command,
            status: out.status.to_string(),
            message: msg,
        });
    }
    Ok(())
}

async fn init(binary: &Path, inv: &Invocation) -> Result<(), PackerError> {
    run_to_end(binary, inv, "init", &[]).await
}

/// `packer validate` (after `packer init` for current Packer).
pub async fn validate(binary: &Path, inv: &Invocation, vars: &[String]) -> Result<(), PackerError> {
    if inv.init {
        init(binary, inv).await?;
    }
    run_to_end(binary, inv, "validate", vars).await
}

/// Longest time `packer console` gets to evaluate an expression.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Evaluates `expression` in the template with `packer console` (after `packer init` for current
/// Packer) and returns what it printed, trimmed: the template's own values, with the variables of
/// the build.
pub async fn console(
    binary: &Path,
    inv: &Invocation,
    vars: &[String],
    expression: &str,
) -> Result<String, PackerError> {
    use tokio::io::AsyncWriteExt;
    if inv.init {
        init(binary, inv).await?;
    }
    let mut child = Command::new(binary)
        .arg("console")
        .args(vars)
        .arg(&inv.path)
        .current_dir(&inv.workdir)
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| PackerError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(format!("{expression}\n").as_bytes())
        .await
        .map_err(io("writing to packer console"))?;
    drop(stdin);
    let out = tokio::time::timeout(CONSOLE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| PackerError::Failed {
            command: "console",
            status: "timed out".into(),
            message: format!("no answer within {}s", CONSOLE_TIMEOUT.as_secs()),
        })?
        .map_err(io("waiting for packer console"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(PackerError::Failed {
            command: "console",
            status: out.status.to_string(),
            message: format!("{expression}: {} {}", stdout, stderr.trim()),
        });
    }
    Ok(stdout)
}

/// One line of `-machine-readable` output: `timestamp,target,type,data...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineLine {
    /// The build name (empty for global messages).
    pub target: String,
    /// `ui`, `artifact`, `error`, …
    pub kind: String,
    /// The remaining fields, unescaped.
    pub data: Vec<String>,
}

impl MachineLine {
    /// Parses a line; `None` for lines that are not machine-readable.
    #[must_use]
    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line.trim_end_matches(['\r', '\n']).split(',');
        let ts = fields.next()?;
        if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let target = fields.next()?.to_owned();
        let kind = fields.next()?.to_owned();
        let data = fields
            .map(|f| {
                f.replace("%!(PACKER_COMMA)", ",")
                    .replace("\\n", "\n")
                    .replace("\\r", "\r")
            })
            .collect();
        Some(Self { target, kind, data })
    }

    /// `(region, ami)` pairs of an `artifact,N,id,REGION:AMI[,REGION:AMI…]` line.
    #[must_use]
    pub fn artifact_ids(&self) -> Vec<(String, String)> {
        if self.kind != "artifact" || self.data.get(1).map(String::as_str) != Some("id") {
            return Vec::new();
        }
        self.data[2..]
            .iter()
            .flat_map(|f| f.split(','))
            .filter_map(|pair| {
                let (region, ami) = pair.split_once(':')?;
                ami.starts_with("ami-")
                    .then(|| (region.trim().to_owned(), ami.trim().to_owned()))
            })
            .collect()
    }

    /// The step text of a `ui,say` / `ui,message` / `ui,error` line, without Packer's arrows.
    #[must_use]
    pub fn ui_text(&self) -> Option<(&str, String)> {
        if self.kind != "ui" {
            return None;
        }
        let level = self.data.first()?.as_str();
        let text = self.data.get(1)?.trim();
        let text = text
            .trim_start_matches("==>")
            .trim_start_matches("-->")
            .trim();
        Some((level, text.to_owned()))
    }
}

/// A finished build.
#[derive(Clone, Debug)]
pub struct Built {
    /// `(region, AMI id)` for every artifact.
    pub amis: Vec<(String, String)>,
    /// Time Packer ran.
    pub packer_elapsed: Duration,
    /// The image's SBOM as its build printed it (framed, [`bake_common::sbom::frame`]: the
    /// end of packer/scripts/cleanup.sh), or why it could not be read; `None` when the build
    /// printed none (nothing was provisioned: communicator none).
    pub sbom: Option<Result<Vec<u8>, String>>,
}

/// How a build's wait ended.
enum Ended {
    Exited(std::process::ExitStatus),
    Interrupted,
    TimedOut,
}

/// `packer build -machine-readable`: streams progress, parses artifacts, passes an interrupt
/// (SIGINT, SIGTERM or SIGHUP to bake) on as one SIGINT to Packer's process group and waits for
/// Packer's cleanup.
pub async fn build(
    binary: &Path,
    inv: &Invocation,
    vars: &[String],
    timeout: Option<Duration>,
    progress: &Progress,
) -> Result<Built, PackerError> {
    if inv.init {
        progress.step("packer init");
        init(binary, inv).await?;
    }
    if crate::signals::received() > 0 {
        // Interrupted before Packer started: nothing to clean up.
        return Err(PackerError::Interrupted);
    }
    let started = std::time::Instant::now();
    let mut cmd = Command::new(binary);
    cmd.arg("build")
        .arg("-machine-readable")
        .arg("-color=false")
        .args(vars)
        .arg(&inv.path)
        .current_dir(&inv.workdir)
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches bake only, and bake passes exactly
        // one SIGINT on (a second one makes Packer abandon its cleanup).
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| PackerError::Spawn {
        binary: binary.display().to_string(),
        source,
    })?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut out_lines = BufReader::new(stdout).lines();
    let mut err_lines = BufReader::new(stderr).lines();
    let mut amis = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut sbom = bake_common::sbom::Unframer::default();
    let mut out_open = true;
    let mut err_open = true;
    // packer.timeout is bounded by config validation; an unrepresentable deadline is none.
    let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
    let mut interrupted = false;
    let mut timed_out = false;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut interrupts = crate::signals::Interrupts::new();
    let sleep_until = |d: Option<tokio::time::Instant>| async move {
        match d {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    while out_open || err_open {
        tokio::select! {
            line = out_lines.next_line(), if out_open => match line {
                Ok(Some(line)) => handle_line(&line, progress, &mut amis, &mut errors, &mut sbom),
                Ok(None) | Err(_) => out_open = false,
            },
            line = err_lines.next_line(), if err_open => match line {
                Ok(Some(line)) => {
                    if !line.trim().is_empty() {
                        tracing::debug!(target: "bake::packer", "{line}");
                        errors.push(line);
                    }
                }
                Ok(None) | Err(_) => err_open = false,
            },
            name = interrupts.recv(), if !interrupted && !timed_out => {
                interrupted = true;
                progress.note(&format!("interrupted ({name}): asking Packer to stop and clean up (temporary instance, key pair, security group)"));
                signal(pid, nix::sys::signal::Signal::SIGINT);
                kill_at = Some(tokio::time::Instant::now() + CLEANUP_GRACE);
            },
            () = sleep_until(deadline), if !interrupted && !timed_out => {
                timed_out = true;
                progress.note("packer.timeout reached: asking Packer to stop and clean up");
                signal(pid, nix::sys::signal::Signal::SIGINT);
                kill_at = Some(tokio::time::Instant::now() + CLEANUP_GRACE);
            },
            () = sleep_until(kill_at) => {
                progress.note("Packer did not finish its cleanup in time: killing it");
                signal(pid, nix::sys::signal::Signal::SIGKILL);
                kill_at = None;
            },
        }
    }
    let status = child.wait().await.map_err(io("waiting for packer"))?;
    let ended = if timed_out {
        Ended::TimedOut
    } else if interrupted {
        Ended::Interrupted
    } else {
        Ended::Exited(status)
    };
    match ended {
        Ended::TimedOut => Err(PackerError::TimedOut(crate::output::secs(
            timeout.unwrap_or_default(),
        ))),
        Ended::Interrupted => Err(PackerError::Interrupted),
        Ended::Exited(status) if !status.success() => Err(PackerError::Failed {
            command: "build",
            status: status.to_string(),
            message: last_errors(&errors),
        }),
        Ended::Exited(_) if amis.is_empty() => Err(PackerError::NoArtifact),
        Ended::Exited(_) => Ok(Built {
            amis,
            packer_elapsed: started.elapsed(),
            sbom: sbom.finish(),
        }),
    }
}

fn last_errors(errors: &[String]) -> String {
    let start = errors.len().saturating_sub(5);
    let text = errors[start..].join("\n");
    if text.is_empty() {
        "no error output".into()
    } else {
        text
    }
}

/// Signals Packer's whole process group, as a terminal would: Packer's outer (panicwrap) process
/// ignores SIGINT and relies on its child getting it from the group.
fn signal(pid: Option<i32>, sig: nix::sys::signal::Signal) {
    if let Some(pid) = pid {
        if let Err(e) = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig) {
            tracing::warn!(pid, signal = %sig, "cannot signal packer: {e}");
        }
    }
}

fn handle_line(
    line: &str,
    progress: &Progress,
    amis: &mut Vec<(String, String)>,
    errors: &mut Vec<String>,
    sbom: &mut bake_common::sbom::Unframer,
) {
    let Some(m) = MachineLine::parse(line) else {
        if !line.trim().is_empty() {
            tracing::debug!(target: "bake::packer", "{line}");
        }
        return;
    };
    amis.extend(m.artifact_ids());
    if let Some((level, text)) = m.ui_text() {
        if level == "message" && sbom.feed(&text) {
            return;
        }
        match level {
            "say" if !text.is_empty() => progress.step(&text),
            "error" => {
                progress.note(&format!("packer: {text}"));
                errors.push(text);
            }
            _ => tracing::debug!(target: "bake::packer", "{text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_version_parse() {
        assert_eq!(Version::parse("Packer v1.6.6\n"), Some(Version(1, 6, 6)));
        assert_eq!(
            Version::parse("Packer v1.11.2\n\nYour version of Packer is out of date!"),
            Some(Version(1, 11, 2))
        );
        assert!(!Version(1, 6, 6).needs_init());
        assert!(Version(1, 7, 0).needs_init());
        assert!(Version(1, 11, 2).needs_init());
        assert_eq!(Version::parse("nonsense"), None);
    }

    #[test]
    fn test_machine_line_artifact() {
        let m = MachineLine::parse(
            "1795451140,amazon-ebs.app,artifact,0,id,us-east-1:ami-f3f9937c8510d815a",
        )
        .unwrap();
        assert_eq!(
            m.artifact_ids(),
            vec![("us-east-1".into(), "ami-f3f9937c8510d815a".into())]
        );
        let m = MachineLine::parse(
            "1,amazon-ebs.app,artifact,0,id,us-east-1:ami-1%!(PACKER_COMMA)eu-west-1:ami-2",
        )
        .unwrap();
        assert_eq!(m.artifact_ids().len(), 2);
        let m = MachineLine::parse("1,amazon-ebs.app,artifact,0,builder-id,mitchellh.amazonebs")
            .unwrap();
        assert!(m.artifact_ids().is_empty());
    }

    #[test]
    fn test_machine_line_ui() {
        let m = MachineLine::parse(
            "1795451140,,ui,say,==> amazon-ebs.app: Launching a source AWS instance...",
        )
        .unwrap();
        assert_eq!(
            m.ui_text(),
            Some((
                "say",
                "amazon-ebs.app: Launching a source AWS instance...".into()
            ))
        );
        let m = MachineLine::parse("1,,ui,say,No volumes to clean up%!(PACKER_COMMA) skipping")
            .unwrap();
        assert_eq!(m.ui_text().unwrap().1, "No volumes to clean up, skipping");
        assert_eq!(MachineLine::parse("Build 'x' errored"), None);
    }

    #[test]
    fn test_required_plugins_and_declared() {
        assert!(has_required_plugins("packer {\n  required_plugins {\n"));
        assert!(!has_required_plugins("# required_plugins {\n"));
        assert_eq!(
            declared_variables("variable \"region\" {\n  type = string\n}\nvariable \"x\" {}"),
            vec!["region".to_owned(), "x".to_owned()]
        );
        assert_eq!(
            declared_locals("locals {\n  # c\n  source_ami_filter = {\n    filters = {\n      name = \"x\"\n    }\n  }\n  stamp = 1\n}\nsource \"a\" \"b\" {\n  x = 1\n}\n"),
            vec!["source_ami_filter".to_owned(), "stamp".to_owned()]
        );
    }

    #[test]
    fn test_invocation_old_packer_stages_without_required_plugins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("plugins.pkr.hcl"),
            "packer {\n  required_plugins {\n  }\n}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bake.pkr.hcl"),
            "variable \"region\" {\n}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        let inv = invocation(dir.path(), Version(1, 6, 6)).unwrap();
        assert!(!inv.init);
        assert!(inv.path.join("bake.pkr.hcl").exists());
        assert!(inv.path.join("scripts").exists());
        assert!(!inv.path.join("plugins.pkr.hcl").exists());
        assert_eq!(inv.declared, vec!["region".to_owned()]);
        let inv = invocation(dir.path(), Version(1, 11, 0)).unwrap();
        assert!(inv.init);
        assert_eq!(inv.path, dir.path());
        let e = invocation(&dir.path().join("plugins.pkr.hcl"), Version(1, 6, 6))
            .unwrap_err()
            .to_string();
        assert!(e.contains("required_plugins"), "{e}");
    }
}
