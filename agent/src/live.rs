//! `bake-agent check --live`: is this instance, as it runs now, what a fleet member must be?
//!
//! Six checks, always in this order, each `{name, ok, detail}`:
//! - `units`: `systemctl is-active` of [`UNITS`] all `active`, and `systemctl list-units
//!   --state=failed` empty;
//! - `app`: the agent's state file ([`crate::status`]) says the app is running, and its pid is
//!   alive;
//! - `readiness`: the state file says the app answered its readiness probe;
//! - `secrets`: `[secrets] path` can be read now (GetParametersByPath as the daemon reads it);
//!   the detail is a count, never a value;
//! - `efs`: `[efs]` is mounted and writable (a probe file is created, fsynced and removed in
//!   `[uploads] dir`, else the mount point);
//! - `firewall`: `[app] port` is in the nftables set `inet filter app_ports`.
//!
//! Gathering ([`gather`]) is I/O; judging ([`evaluate`]) is a pure function of the gathered
//! [`Facts`], and so is the report document ([`report`]) that `--report` writes to the SSM
//! parameter named by the instance tag `bake:image-test` (`bake test-image` reads it).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use aws_smithy_types::error::display::DisplayErrorContext;

use crate::config::Settings;
use crate::exit::{coded, Exit};
use crate::identity::{self, Identity};
use crate::imds::Imds;

/// The check names, in report order.
pub const CHECKS: [&str; 6] = ["units", "app", "readiness", "secrets", "efs", "firewall"];
/// The units that must be `active` on a healthy instance: the agent, the timers of the reaper
/// and of the weekly task (a timer waiting for its next run is `active`), the firewall.
pub const UNITS: [&str; 4] = [
    "bake-agent.service",
    "bake-agent-reap.timer",
    "bake-user-stats.timer",
    "nftables.service",
];
/// Where systemctl is on Debian (merged /usr or not) and Amazon Linux alike.
pub const DEFAULT_SYSTEMCTL: &str = "/bin/systemctl";
/// The version of the report document; a change that could break a reader bumps it.
pub const REPORT_SCHEMA_VERSION: u64 = 1;
/// The most characters of a check's detail in the report.
pub const DETAIL_CHARS: usize = 300;
/// The largest report: a Standard-tier SSM parameter value holds 4 KiB.
pub const MAX_REPORT_BYTES: usize = 4096;
/// How often `--wait` reads the state file.
pub const WAIT_POLL: Duration = Duration::from_secs(1);
/// After `--wait`, the longest wait for [`UNITS`] to leave a transitional state (`activating`,
/// `deactivating`, `reloading`): the agent writes `ready` to its state file a moment before
/// systemd has taken its `READY=1`.
pub const UNITS_SETTLE: Duration = Duration::from_secs(15);

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// One of [`CHECKS`].
    pub name: &'static str,
    /// Passed.
    pub ok: bool,
    /// What was found (never a secret value).
    pub detail: String,
}

/// What systemctl said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitFacts {
    /// `(unit, state)` for each of [`UNITS`], or why systemctl could not say.
    pub active: Result<Vec<(String, String)>, String>,
    /// The failed units, or why systemctl could not say.
    pub failed: Result<Vec<String>, String>,
}

/// What the agent's state file says.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentFacts {
    /// No state file: the agent is not running (or not yet).
    NoFile {
        /// The file.
        path: PathBuf,
    },
    /// The file cannot be read or is not a state document.
    Unreadable {
        /// Why.
        message: String,
    },
    /// Written by an agent that is gone.
    Gone {
        /// The pid that wrote it.
        pid: u64,
    },
    /// The document of a running agent.
    Running {
        /// The state file's document.
        doc: serde_json::Value,
        /// Whether the app's pid (when the document has one) is a live process.
        app_alive: bool,
    },
}

/// `[app] port` and what the set holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewallFacts {
    /// The port.
    pub port: u16,
    /// The set's elements, or why nft could not list them.
    pub elements: Result<Vec<RangeInclusive<u16>>, String>,
}

/// Everything the checks judge.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    /// systemctl.
    pub units: UnitFacts,
    /// The state file.
    pub agent: AgentFacts,
    /// How long `--wait` waited for readiness (`None`: no `--wait`).
    pub waited: Option<Duration>,
    /// Number of parameters under `[secrets] path`, or why they could not be read; `None`:
    /// not configured.
    pub secrets: Option<Result<usize, String>>,
    /// What is mounted and written, or why not; `None`: no `[efs]`.
    pub efs: Option<Result<String, String>>,
    /// `None`: no `[app] port`.
    pub firewall: Option<FirewallFacts>,
}

/// `text` on one line: its lines trimmed and joined by a space (nft's error comes with the
/// command and a `^^^` marker under it), any other control character a space.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The checks for `facts`, in [`CHECKS`] order; every detail on one line.
#[must_use]
pub fn evaluate(facts: &Facts) -> Vec<Check> {
    let check = |name, ok, detail: String| Check {
        name,
        ok,
        detail: one_line(&detail),
    };
    let (units_ok, units) = units_check(&facts.units);
    let (app_ok, app) = app_check(&facts.agent);
    let (ready_ok, ready) = readiness_check(&facts.agent, facts.waited);
    let (secrets_ok, secrets) = match &facts.secrets {
        None => (true, "not configured".to_owned()),
        Some(Ok(1)) => (true, "1 parameter".to_owned()),
        Some(Ok(n)) => (true, format!("{n} parameters")),
        Some(Err(e)) => (false, e.clone()),
    };
    let (efs_ok, efs) = match &facts.efs {
        None => (true, "not configured".to_owned()),
        Some(Ok(d)) => (true, d.clone()),
        Some(Err(e)) => (false, e.clone()),
    };
    let (fw_ok, fw) = firewall_check(facts.firewall.as_ref());
    vec![
        check("units", units_ok, units),
        check("app", app_ok, app),
        check("readiness", ready_ok, ready),
        check("secrets", secrets_ok, secrets),
        check("efs", efs_ok, efs),
        check("firewall", fw_ok, fw),
    ]
}

fn units_check(u: &UnitFacts) -> (bool, String) {
    let mut problems = Vec::new();
    match &u.active {
        Ok(states) => {
            let bad: Vec<String> = states
                .iter()
                .filter(|(_, s)| s != "active")
                .map(|(u, s)| format!("{u} {s}"))
                .collect();
            if !bad.is_empty() {
                problems.push(format!("not active: {}", bad.join(", ")));
            }
        }
        Err(e) => problems.push(format!("systemctl is-active: {e}")),
    }
    match &u.failed {
        Ok(f) if f.is_empty() => {}
        Ok(f) => problems.push(format!("failed units: {}", f.join(", "))),
        Err(e) => problems.push(format!("systemctl list-units --state=failed: {e}")),
    }
    if problems.is_empty() {
        (
            true,
            format!("{} active, no failed units", UNITS.join(", ")),
        )
    } else {
        (false, problems.join("; "))
    }
}

/// Why the agent cannot be asked, for the app and readiness checks.
fn agent_missing(agent: &AgentFacts) -> Option<String> {
    match agent {
        AgentFacts::NoFile { path } => Some(format!(
            "bake-agent is not running: no state file at '{}'",
            path.display()
        )),
        AgentFacts::Unreadable { message } => Some(message.clone()),
        AgentFacts::Gone { pid } => Some(format!(
            "bake-agent is not running: its state file was written by pid {pid}, which is gone"
        )),
        AgentFacts::Running { .. } => None,
    }
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn app_check(agent: &AgentFacts) -> (bool, String) {
    if let Some(why) = agent_missing(agent) {
        return (false, why);
    }
    let AgentFacts::Running { doc, app_alive } = agent else {
        return (false, "no state".to_owned());
    };
    let app = &doc["app"];
    let restarts = match doc["restarts"].as_u64().unwrap_or(0) {
        1 => "1 restart".to_owned(),
        n => format!("{n} restarts"),
    };
    let (ok, state) = match app["state"].as_str().unwrap_or("unknown") {
        "running" if *app_alive => (true, format!("running (pid {})", text(&app["pid"]))),
        "running" => (
            false,
            format!(
                "the state file says running (pid {}), but that process is gone",
                text(&app["pid"])
            ),
        ),
        "exited" => (
            false,
            format!(
                "exited ({}), restart in {} ms",
                text(&app["exit"]),
                text(&app["restart_in_ms"])
            ),
        ),
        other => (false, other.to_owned()),
    };
    let mut detail = format!("{state}, {restarts}");
    if !ok {
        if let Some(e) = doc["last_error"].as_str() {
            detail.push_str(&format!("; last error: {e}"));
        }
    }
    (ok, detail)
}

fn readiness_check(agent: &AgentFacts, waited: Option<Duration>) -> (bool, String) {
    if let Some(why) = agent_missing(agent) {
        return (false, why);
    }
    let AgentFacts::Running { doc, .. } = agent else {
        return (false, "no state".to_owned());
    };
    match doc["readiness"].as_str().unwrap_or("unknown") {
        "ready" => (true, "ready".to_owned()),
        "waiting" => (
            false,
            match waited {
                Some(w) => format!(
                    "not ready yet after waiting {}",
                    humantime::format_duration(Duration::from_secs(w.as_secs()))
                ),
                None => "not ready yet (the readiness probe has not passed)".to_owned(),
            },
        ),
        "never_ready" => (
            false,
            "never became ready (the readiness probe's timeout passed)".to_owned(),
        ),
        other => (false, format!("unknown readiness {other:?}")),
    }
}

fn ports_text(elements: &[RangeInclusive<u16>]) -> String {
    elements
        .iter()
        .map(|r| {
            if r.start() == r.end() {
                r.start().to_string()
            } else {
                format!("{}-{}", r.start(), r.end())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn firewall_check(f: Option<&FirewallFacts>) -> (bool, String) {
    let Some(f) = f else {
        return (true, "no [app] port".to_owned());
    };
    let set = crate::firewall::SET.join(" ");
    match &f.elements {
        Err(e) => (false, e.clone()),
        Ok(el) if el.iter().any(|r| r.contains(&f.port)) => {
            (true, format!("port {} is in {set}", f.port))
        }
        Ok(el) if el.is_empty() => (
            false,
            format!("port {} is not in {set}, which is empty", f.port),
        ),
        Ok(el) => (
            false,
            format!(
                "port {} is not in {set} (it holds {})",
                f.port,
                ports_text(el)
            ),
        ),
    }
}

/// `detail` for the report: control characters as spaces, at most `chars` characters (`…`
/// marks a cut).
fn short(detail: &str, chars: usize) -> String {
    let clean: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= chars {
        return clean;
    }
    let mut out: String = clean.chars().take(chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The report document, in this field order.
#[derive(serde::Serialize)]
struct Report<'a> {
    schema_version: u64,
    instance_id: &'a str,
    image_id: Option<&'a str>,
    result: &'static str,
    checks: Vec<Check>,
    at: String,
}

/// Whether every check passed.
#[must_use]
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.ok)
}

/// The report document (one line of JSON): `{"schema_version":1,"instance_id":…,"image_id":…,
/// "result":"pass"|"fail","checks":[{"name","ok","detail"}…],"at":"…Z"}`, each detail cut to
/// [`DETAIL_CHARS`] and, should the whole exceed [`MAX_REPORT_BYTES`], shorter still.
#[must_use]
pub fn report(identity: &Identity, checks: &[Check], at: SystemTime) -> String {
    let mut chars = DETAIL_CHARS;
    loop {
        let doc = Report {
            schema_version: REPORT_SCHEMA_VERSION,
            instance_id: &identity.instance_id,
            image_id: identity.image_id.as_deref(),
            result: if passed(checks) { "pass" } else { "fail" },
            checks: checks
                .iter()
                .map(|c| Check {
                    detail: short(&c.detail, chars),
                    ..c.clone()
                })
                .collect(),
            at: humantime::format_rfc3339_seconds(at).to_string(),
        };
        let text = serde_json::to_string(&doc).expect("a report serializes: strings and numbers");
        if text.len() <= MAX_REPORT_BYTES || chars == 0 {
            return text;
        }
        chars /= 2;
    }
}

/// The checks as aligned lines (`ok  ` / `FAIL`, name, detail) and a last line `live check:
/// pass|fail`.
#[must_use]
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4}  {:<9}  {}\n",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        ));
    }
    out.push_str(&format!(
        "live check: {}\n",
        if passed(checks) { "pass" } else { "fail" }
    ));
    out
}

/// Runs `program args…` (stdin closed) and returns its stdout, or why it failed: the program
/// could not be started, or it exited non-zero (`ok_status` says which codes are fine) with
/// what it said on stderr.
fn run_program(
    program: &Path,
    args: &[&str],
    ok_status: impl Fn(i32) -> bool,
) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run '{}': {e}", program.display()))?;
    match out.status.code() {
        Some(c) if ok_status(c) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        _ => {
            let said = String::from_utf8_lossy(&out.stderr)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            Err(format!(
                "'{} {}' failed ({}): {}",
                program.display(),
                args.join(" "),
                out.status,
                if said.is_empty() { "no message" } else { &said }
            ))
        }
    }
}

/// `systemctl is-active UNIT…` prints one state per unit, in order, and exits 0 only when all
/// are active; anything but one line per unit is an error (no systemd, no bus). `systemctl
/// list-units --state=failed --plain --no-legend --no-pager`: one line per failed unit, its
/// name first (systemd 252 prints no `●` with `--plain`; one is dropped all the same).
#[must_use]
pub fn unit_facts(systemctl: &Path) -> UnitFacts {
    let mut args = vec!["is-active"];
    args.extend(UNITS);
    let active = match run_program(systemctl, &args, |_| true) {
        Err(e) => Err(e),
        Ok(out) => {
            let states: Vec<&str> = out.lines().map(str::trim).collect();
            if states.len() == UNITS.len() {
                Ok(UNITS
                    .iter()
                    .zip(states)
                    .map(|(u, s)| ((*u).to_owned(), s.to_owned()))
                    .collect())
            } else {
                // What it said on stderr explains it (e.g. "System has not been booted with
                // systemd as init system (PID 1). Can't operate.").
                Err(run_program(systemctl, &args, |c| c == 0)
                    .err()
                    .unwrap_or_else(|| {
                        format!("printed {} states for {} units", states.len(), UNITS.len())
                    }))
            }
        }
    };
    let failed = run_program(
        systemctl,
        &[
            "list-units",
            "--state=failed",
            "--plain",
            "--no-legend",
            "--no-pager",
        ],
        |c| c == 0,
    )
    .map(|out| parse_failed_units(&out));
    UnitFacts { active, failed }
}

/// Whether a unit of `facts` is in a transitional state (it may still settle either way).
#[must_use]
pub fn units_unsettled(facts: &UnitFacts) -> bool {
    facts.active.as_ref().is_ok_and(|states| {
        states
            .iter()
            .any(|(_, s)| matches!(s.as_str(), "activating" | "deactivating" | "reloading"))
    })
}

/// [`unit_facts`], read again every [`WAIT_POLL`] while a unit is [unsettled](units_unsettled),
/// at most `limit` long.
pub async fn settled_unit_facts(systemctl: &Path, limit: Duration) -> UnitFacts {
    let start = Instant::now();
    loop {
        let facts = unit_facts(systemctl);
        if !units_unsettled(&facts) || start.elapsed() >= limit {
            return facts;
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// The unit names of `systemctl list-units --state=failed --plain --no-legend` output.
#[must_use]
pub fn parse_failed_units(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| *w != "●" && *w != "*")
                .map(str::to_owned)
        })
        .collect()
}

/// Reads the agent's state file.
#[must_use]
pub fn agent_facts(status_file: &Path) -> AgentFacts {
    let text = match std::fs::read_to_string(status_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return AgentFacts::NoFile {
                path: status_file.to_owned(),
            }
        }
        Err(e) => {
            return AgentFacts::Unreadable {
                message: format!("cannot read '{}': {e}", status_file.display()),
            }
        }
    };
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(d) => d,
        Err(e) => {
            return AgentFacts::Unreadable {
                message: format!("'{}' is not a state document: {e}", status_file.display()),
            }
        }
    };
    let alive = |pid: u64| pid != 0 && Path::new(&format!("/proc/{pid}")).exists();
    let pid = doc["agent_pid"].as_u64().unwrap_or(0);
    if !alive(pid) {
        return AgentFacts::Gone { pid };
    }
    let app_alive = doc["app"]["pid"].as_u64().is_some_and(alive);
    AgentFacts::Running { doc, app_alive }
}

/// Creates a file of a name of its own (O_EXCL) in `dir`, writes to it, fsyncs and removes it.
pub fn probe_writable(dir: &Path) -> Result<(), String> {
    use std::io::Write;
    let name = format!(
        ".bake-live-check-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    );
    let path = dir.join(name);
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} '{}': {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| fail("create", e))?;
    let written = f
        .write_all(b"bake-agent check --live\n")
        .map_err(|e| fail("write", e))
        .and_then(|()| f.sync_all().map_err(|e| fail("fsync", e)));
    drop(f);
    let removed = std::fs::remove_file(&path).map_err(|e| fail("remove", e));
    written.and(removed)
}

/// `[efs]` mounted, and its uploads directory (else its mount point) writable.
#[must_use]
pub fn efs_facts(settings: &Settings) -> Option<Result<String, String>> {
    let efs = settings.efs.as_ref()?;
    Some((|| {
        let m = crate::mount::check_mounted(efs).map_err(|e| e.to_string())?;
        let dir = settings
            .uploads
            .as_ref()
            .map_or(&efs.mount_point, |u| &u.dir);
        probe_writable(dir)?;
        Ok(format!(
            "{} mounted at {}; {} writable",
            m.fstype,
            efs.mount_point.display(),
            dir.display()
        ))
    })())
}

/// The count of parameters under `[secrets] path`, read as the daemon reads them (recursive,
/// decrypted, every page; the daemon's refusal of overrides included). The values are dropped.
pub async fn secrets_facts(
    settings: &Settings,
    ssm: &aws_sdk_ssm::Client,
) -> Option<Result<usize, String>> {
    let s = settings.secrets.as_ref()?;
    let env = settings
        .app
        .as_ref()
        .map(|a| a.env.clone())
        .unwrap_or_default();
    Some(
        crate::secrets::fetch(ssm, &s.path)
            .await
            .and_then(|e| crate::secrets::refuse_overrides(&e, &env, &s.allow_override).map(|()| e))
            .map(|e| e.vars.len())
            .map_err(|e| e.to_string()),
    )
}

/// `[app] port` and the set's elements.
#[must_use]
pub fn firewall_facts(settings: &Settings, nft: &Path) -> Option<FirewallFacts> {
    let port = settings.app.as_ref().and_then(|a| a.port)?;
    Some(FirewallFacts {
        port,
        elements: crate::firewall::list_set(nft).map_err(|e| e.to_string()),
    })
}

/// Waits (reading the state file every [`WAIT_POLL`]) until the agent's readiness is no longer
/// `waiting` (ready or never ready) or `limit` passed; how long it waited.
pub async fn wait_for_readiness(status_file: &Path, limit: Duration) -> Duration {
    let start = Instant::now();
    tracing::info!(status_file = %status_file.display(), limit = %humantime::format_duration(limit),
        "waiting for the agent's readiness");
    loop {
        if let AgentFacts::Running { doc, .. } = agent_facts(status_file) {
            if doc["readiness"].as_str().is_some_and(|r| r != "waiting") {
                tracing::info!(readiness = %text(&doc["readiness"]),
                    waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "the agent's readiness is decided");
                return start.elapsed();
            }
        }
        if start.elapsed() >= limit {
            tracing::warn!(limit = %humantime::format_duration(limit),
                "the agent's readiness is still undecided; checking anyway");
            return start.elapsed();
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// How `check --live` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckOutput {
    /// One aligned line per check and `live check: pass|fail`.
    #[default]
    Text,
    /// The report document (one line of JSON).
    Json,
}

/// The options of `check --live`.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Output format.
    pub output: CheckOutput,
    /// Wait this long for readiness first.
    pub wait: Option<Duration>,
    /// Write the report to the image-test parameter.
    pub report: bool,
    /// The nft program.
    pub nft: PathBuf,
    /// The systemctl program.
    pub systemctl: PathBuf,
}

/// `bake-agent check --live`: identity and configuration as `run` reads them, the checks, the
/// output, and with `--report` the report to the image-test parameter. [`Exit::Ok`] when every
/// check passed, [`Exit::LiveCheckFailed`] when one failed; tool errors: [`Exit::Imds`],
/// [`Exit::Config`], [`Exit::Aws`] (the report could not be written).
pub async fn run(config: &Path, status_file: &Path, opts: &LiveOptions) -> anyhow::Result<Exit> {
    let imds = Imds::from_env();
    let identity = identity::from_imds(&imds)
        .await
        .map_err(|e| coded(Exit::Imds, e))?;
    // `bake-image-test.service` runs this at every boot of every instance: elsewhere it must
    // cost nothing (no wait, no checks).
    if opts.report && identity.image_test.is_none() {
        crate::outln!(
            "not an image-test instance (no {} tag): nothing to report",
            identity::IMAGE_TEST_TAG
        );
        return Ok(Exit::Ok);
    }
    let settings = crate::config::load_on_instance(config, &imds).await?;
    let mut aws_settings = settings.aws.clone();
    if aws_settings.region.is_none() {
        aws_settings.region = Some(identity.region.clone());
    }
    let aws = crate::aws::Aws::load(&aws_settings).await;
    let waited = match opts.wait {
        Some(limit) => Some(wait_for_readiness(status_file, limit).await),
        None => None,
    };
    let units = if waited.is_some() {
        settled_unit_facts(&opts.systemctl, UNITS_SETTLE).await
    } else {
        unit_facts(&opts.systemctl)
    };
    let facts = Facts {
        units,
        agent: agent_facts(status_file),
        waited,
        secrets: secrets_facts(&settings, &aws.ssm).await,
        efs: efs_facts(&settings),
        firewall: firewall_facts(&settings, &opts.nft),
    };
    let checks = evaluate(&facts);
    let doc = report(&identity, &checks, SystemTime::now());
    match opts.output {
        CheckOutput::Text => crate::outln!("{}", render(&checks).trim_end()),
        CheckOutput::Json => crate::outln!("{doc}"),
    }
    let ok = passed(&checks);
    if opts.report {
        if let Some(parameter) = &identity.image_test {
            aws.ssm
                .put_parameter()
                .name(parameter)
                .value(&doc)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .overwrite(true)
                .send()
                .await
                .map_err(|e| {
                    coded(
                        Exit::Aws,
                        format!(
                            "cannot write the image-test report to SSM parameter '{parameter}': {}",
                            DisplayErrorContext(&e)
                        ),
                    )
                })?;
            tracing::info!(%parameter, result = if ok { "pass" } else { "fail" },
                "image-test report written");
        }
    }
    Ok(if ok { Exit::Ok } else { Exit::LiveCheckFailed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            instance_id: "i-0abc".into(),
            region: "us-east-1".into(),
            availability_zone: "us-east-1a".into(),
            asg_name: None,
            image_id: Some("ami-0new".into()),
            image_test: Some("/bake/prod/image-tests/ami-0new/20261203T071500Z".into()),
            migrate: None,
        }
    }

    fn running_doc(app_state: &str, readiness: &str) -> serde_json::Value {
        serde_json::json!({
            "schema_version": 2,
            "agent_pid": 1,
            "app": {"state": app_state, "pid": 812, "exit": "exit code 3", "restart_in_ms": 2000},
            "restarts": 2,
            "readiness": readiness,
            "last_error": "the app exited (exit code 3)",
        })
    }

    /// Every fact as on a healthy instance.
    fn healthy() -> Facts {
        Facts {
            units: UnitFacts {
                active: Ok(UNITS
                    .iter()
                    .map(|u| ((*u).to_owned(), "active".to_owned()))
                    .collect()),
                failed: Ok(Vec::new()),
            },
            agent: AgentFacts::Running {
                doc: running_doc("running", "ready"),
                app_alive: true,
            },
            waited: Some(Duration::from_secs(3)),
            secrets: Some(Ok(4)),
            efs: Some(Ok(
                "nfs4 mounted at /mnt/efs; /mnt/efs/uploads writable".into()
            )),
            firewall: Some(FirewallFacts {
                port: 3000,
                elements: Ok(vec![3000..=3000]),
            }),
        }
    }

    fn failing(facts: &Facts) -> Vec<&'static str> {
        evaluate(facts)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }

    fn detail(facts: &Facts, name: &str) -> String {
        evaluate(facts)
            .into_iter()
            .find(|c| c.name == name)
            .unwrap()
            .detail
    }

    #[test]
    fn test_healthy_facts_pass_every_check_in_order() {
        let checks = evaluate(&healthy());
        let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
        assert_eq!(names, CHECKS);
        assert!(passed(&checks), "{checks:?}");
        assert_eq!(checks[1].detail, "running (pid 812), 2 restarts");
        assert_eq!(checks[3].detail, "4 parameters");
        assert_eq!(checks[5].detail, "port 3000 is in inet filter app_ports");
    }

    #[test]
    fn test_each_failing_fact_fails_its_own_check() {
        let mut f = healthy();
        f.units.active = Ok(vec![
            ("bake-agent.service".into(), "activating".into()),
            ("bake-agent-reap.timer".into(), "active".into()),
            ("bake-user-stats.timer".into(), "active".into()),
            ("nftables.service".into(), "failed".into()),
        ]);
        assert_eq!(failing(&f), ["units"]);
        assert_eq!(
            detail(&f, "units"),
            "not active: bake-agent.service activating, nftables.service failed"
        );
        let mut f = healthy();
        f.units.failed = Ok(vec!["foo.service".into(), "bar.mount".into()]);
        assert_eq!(failing(&f), ["units"]);
        assert_eq!(detail(&f, "units"), "failed units: foo.service, bar.mount");
        let mut f = healthy();
        f.units.active = Err("System has not been booted with systemd".into());
        assert_eq!(failing(&f), ["units"]);

        // The app: its pid is gone, or it exited.
        let mut f = healthy();
        f.agent = AgentFacts::Running {
            doc: running_doc("running", "ready"),
            app_alive: false,
        };
        assert_eq!(failing(&f), ["app"]);
        assert!(detail(&f, "app").contains("that process is gone"));
        let mut f = healthy();
        f.agent = AgentFacts::Running {
            doc: running_doc("exited", "ready"),
            app_alive: false,
        };
        assert_eq!(failing(&f), ["app"]);
        assert_eq!(
            detail(&f, "app"),
            "exited (exit code 3), restart in 2000 ms, 2 restarts; last error: the app exited (exit code 3)"
        );

        // Readiness: still waiting (after --wait), or never ready.
        let mut f = healthy();
        f.agent = AgentFacts::Running {
            doc: running_doc("running", "waiting"),
            app_alive: true,
        };
        f.waited = Some(Duration::from_millis(900_400));
        assert_eq!(failing(&f), ["readiness"]);
        assert_eq!(detail(&f, "readiness"), "not ready yet after waiting 15m");
        let mut f = healthy();
        f.agent = AgentFacts::Running {
            doc: running_doc("running", "never_ready"),
            app_alive: true,
        };
        assert_eq!(failing(&f), ["readiness"]);

        // No agent at all: both of its checks fail, saying why.
        let mut f = healthy();
        f.agent = AgentFacts::NoFile {
            path: "/run/bake/status.json".into(),
        };
        assert_eq!(failing(&f), ["app", "readiness"]);
        assert!(detail(&f, "app").contains("no state file at '/run/bake/status.json'"));
        let mut f = healthy();
        f.agent = AgentFacts::Gone { pid: 77 };
        assert_eq!(failing(&f), ["app", "readiness"]);

        let mut f = healthy();
        f.secrets = Some(Err("no SSM parameters under '/app/prod'".into()));
        assert_eq!(failing(&f), ["secrets"]);
        let mut f = healthy();
        f.efs = Some(Err("/mnt/efs is not mounted".into()));
        assert_eq!(failing(&f), ["efs"]);
        let mut f = healthy();
        f.firewall = Some(FirewallFacts {
            port: 3000,
            elements: Ok(vec![8080..=8080, 9000..=9010]),
        });
        assert_eq!(failing(&f), ["firewall"]);
        assert_eq!(
            detail(&f, "firewall"),
            "port 3000 is not in inet filter app_ports (it holds 8080, 9000-9010)"
        );
        let mut f = healthy();
        f.firewall = Some(FirewallFacts {
            port: 3000,
            elements: Ok(Vec::new()),
        });
        assert_eq!(failing(&f), ["firewall"]);
        let mut f = healthy();
        f.firewall = Some(FirewallFacts {
            port: 3000,
            elements: Err("cannot run '/usr/sbin/nft': No such file or directory".into()),
        });
        assert_eq!(failing(&f), ["firewall"]);
        // nft's own error: three lines, the last a marker; the detail is one line.
        let mut f = healthy();
        f.firewall = Some(FirewallFacts {
            port: 3000,
            elements: Err("'nft' failed: Error: No such file or directory\nlist set inet filter app_ports\n              ^^^^^^".into()),
        });
        assert_eq!(
            detail(&f, "firewall"),
            "'nft' failed: Error: No such file or directory list set inet filter app_ports ^^^^^^"
        );
    }

    #[test]
    fn test_not_configured_passes() {
        let mut f = healthy();
        f.secrets = None;
        f.efs = None;
        f.firewall = None;
        let checks = evaluate(&f);
        assert!(passed(&checks), "{checks:?}");
        assert_eq!(checks[3].detail, "not configured");
        assert_eq!(checks[4].detail, "not configured");
        assert_eq!(checks[5].detail, "no [app] port");
    }

    #[test]
    fn test_report_document_shape() {
        let mut f = healthy();
        f.efs = Some(Err("not mounted".into()));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_282_100);
        let text = report(&identity(), &evaluate(&f), at);
        assert!(
            text.starts_with(r#"{"schema_version":1,"instance_id":"i-0abc","image_id":"ami-0new","result":"fail","checks":[{"name":"units","ok":true,"detail":"#),
            "{text}"
        );
        assert!(
            text.ends_with(r#"],"at":"2026-12-03T07:15:00Z"}"#),
            "{text}"
        );
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        let checks = doc["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 6);
        for (c, name) in checks.iter().zip(CHECKS) {
            assert_eq!(c["name"], name);
            assert!(c["ok"].is_boolean() && c["detail"].is_string(), "{c}");
            assert_eq!(c.as_object().unwrap().len(), 3);
        }
        assert_eq!(checks[4]["ok"], false);
        let pass = report(&identity(), &evaluate(&healthy()), at);
        assert!(pass.contains(r#""result":"pass""#), "{pass}");
        // Not on EC2: no image id.
        let mut id = identity();
        id.image_id = None;
        assert!(report(&id, &evaluate(&healthy()), at).contains(r#""image_id":null"#));
    }

    #[test]
    fn test_details_are_cut_and_the_report_stays_under_4_kib() {
        let mut f = healthy();
        let long = format!("start {}", "x".repeat(2000));
        f.efs = Some(Err(long.clone()));
        let doc: serde_json::Value =
            serde_json::from_str(&report(&identity(), &evaluate(&f), SystemTime::now())).unwrap();
        let d = doc["checks"][4]["detail"].as_str().unwrap();
        assert_eq!(d.chars().count(), DETAIL_CHARS);
        assert!(d.starts_with("start xxx") && d.ends_with('…'), "{d}");
        // Details that JSON escapes (quotes, backslashes) or that are wide (4-byte characters)
        // in every check: still at most 4 KiB, the cut shorter.
        let worst = "\"\\😀".repeat(400);
        f.units.active = Err(worst.clone());
        f.agent = AgentFacts::Unreadable {
            message: worst.clone(),
        };
        f.secrets = Some(Err(worst.clone()));
        f.efs = Some(Err(worst.clone()));
        f.firewall = Some(FirewallFacts {
            port: 1,
            elements: Err(worst.clone()),
        });
        let text = report(&identity(), &evaluate(&f), SystemTime::now());
        assert!(text.len() <= MAX_REPORT_BYTES, "{} bytes", text.len());
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["checks"].as_array().unwrap().len(), 6);
        assert!(doc["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("systemctl is-active: \"\\😀"));
        // Control characters (a newline in nft's error) do not break the line.
        assert_eq!(short("a\nb\tc", 10), "a b c");
    }

    #[test]
    fn test_text_lines() {
        let mut f = healthy();
        f.firewall = Some(FirewallFacts {
            port: 3000,
            elements: Ok(Vec::new()),
        });
        let text = render(&evaluate(&f));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert_eq!(lines[1], "ok    app        running (pid 812), 2 restarts");
        assert_eq!(
            lines[5],
            "FAIL  firewall   port 3000 is not in inet filter app_ports, which is empty"
        );
        assert_eq!(lines[6], "live check: fail");
        assert_eq!(
            render(&evaluate(&healthy())).lines().last(),
            Some("live check: pass")
        );
    }

    #[test]
    fn test_failed_units_parse() {
        let out =
            "foo.service loaded failed failed Foo\n● bar.mount   loaded failed failed Bar\n\n";
        assert_eq!(parse_failed_units(out), ["foo.service", "bar.mount"]);
        assert!(parse_failed_units("").is_empty());
    }

    #[test]
    fn test_systemctl_that_cannot_run_or_operate_is_a_clear_failure() {
        let f = unit_facts(Path::new("/nonexistent/systemctl"));
        let e = f.active.unwrap_err();
        assert!(e.starts_with("cannot run '/nonexistent/systemctl'"), "{e}");
        assert!(f.failed.is_err());
        // A systemctl that exits 1 and prints nothing on stdout, as systemd 252's does when PID 1
        // is not systemd: the message is what it said on stderr. A stand-in script, for the
        // handling of that output only; the real systemctl runs in the booted-image scenario.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("systemctl");
        std::fs::write(&fake, "#!/bin/sh\necho \"System has not been booted with systemd as init system (PID 1). Can't operate.\" >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let f = unit_facts(&fake);
        let e = f.active.clone().unwrap_err();
        assert!(
            e.contains("is-active bake-agent.service") && e.contains("Can't operate."),
            "{e}"
        );
        let (ok, d) = units_check(&f);
        assert!(!ok);
        assert!(d.contains("systemctl list-units --state=failed:"), "{d}");
    }

    #[test]
    fn test_units_settle_before_they_are_judged() {
        let states = |s: &[&str]| UnitFacts {
            active: Ok(UNITS
                .iter()
                .zip(s)
                .map(|(u, s)| ((*u).to_owned(), (*s).to_owned()))
                .collect()),
            failed: Ok(Vec::new()),
        };
        assert!(!units_unsettled(&states(&["active"; 4])));
        assert!(!units_unsettled(&states(&[
            "failed", "active", "active", "inactive"
        ])));
        assert!(units_unsettled(&states(&[
            "activating",
            "active",
            "active",
            "active"
        ])));
        assert!(units_unsettled(&states(&[
            "active",
            "reloading",
            "active",
            "active"
        ])));
        let err = UnitFacts {
            active: Err("cannot run".into()),
            failed: Err("cannot run".into()),
        };
        assert!(!units_unsettled(&err));
        // A systemctl whose agent unit is activating for its first two reads, then active.
        // A stand-in script, for the polling only; the real systemctl runs in the booted-image
        // scenario.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("systemctl");
        let count = dir.path().join("count");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh
[ \"$1\" = is-active ] || exit 0
echo x >> {c}
                 if [ $(wc -l < {c}) -le 2 ]; then echo activating; else echo active; fi
                 echo active; echo active; echo active
",
                c = count.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let f = rt.block_on(settled_unit_facts(&fake, Duration::from_secs(10)));
        assert!(units_check(&f).0, "{f:?}");
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 3);
        // Never settles: judged as it is once the limit passed.
        std::fs::write(&count, "x\n".repeat(0)).unwrap();
        let f = rt.block_on(settled_unit_facts(&fake, Duration::ZERO));
        assert!(!units_check(&f).0, "{f:?}");
    }

    #[test]
    fn test_probe_leaves_nothing_and_fails_where_it_cannot_create() {
        let dir = tempfile::tempdir().unwrap();
        probe_writable(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let e = probe_writable(&dir.path().join("missing")).unwrap_err();
        assert!(
            e.starts_with("cannot create '") && e.contains("missing/.bake-live-check-"),
            "{e}"
        );
    }
}
