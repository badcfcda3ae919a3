//! Secrets: every SSM parameter under a path becomes an environment variable of the app.
//!
//! Name rule (documented in docs/agent.md): the parameter name relative to the configured prefix,
//! `/` → `_`, every other character that is not an ASCII letter or digit → `_`, upper-cased; a
//! leading digit gets a `_` in front. `/app/prod/db/password` under `/app/prod` → `DB_PASSWORD`.
//! Two parameters with the same variable name are an error naming both. A parameter may not
//! replace what the agent or `app.env` gives the app (PATH, HOME, USER, LOGNAME, SHELL, `LD_*`,
//! every key of the non-secret environment) unless `[secrets] allow_override` names the
//! variable: anyone who can write one parameter under the path could otherwise point PATH or
//! LD_PRELOAD at code of their choice ([`refuse_overrides`]).
//!
//! Values are [`Secret`]s: `***` in every `Debug`/`Display`, so they never reach logs or error
//! text; they go to the child only through its environment (never argv) and, optionally, to an
//! env file of mode 0600 owned by the app user, written atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_sdk_ssm::types::ParameterStringFilter;
use aws_smithy_types::error::display::DisplayErrorContext;

/// A secret value. Prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    #[must_use]
    pub fn new(v: String) -> Self {
        Self(v)
    }

    /// The value itself: only for the child's environment and the env file.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Errors loading secrets. None of them carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// GetParametersByPath / DescribeParameters failed (access denied, throttled, …).
    #[error("reading SSM parameters under '{path}': {message}")]
    Fetch {
        /// The prefix.
        path: String,
        /// The SDK error with its context.
        message: String,
    },
    /// Nothing under the prefix: fail closed rather than start an app without its secrets.
    #[error(
        "no SSM parameters under '{path}' (a missing path fails closed: the app is not started)"
    )]
    Empty {
        /// The prefix.
        path: String,
    },
    /// Two parameters map to one variable.
    #[error("SSM parameters '{first}' and '{second}' both map to the environment variable {var}")]
    Collision {
        /// The variable.
        var: String,
        /// One parameter.
        first: String,
        /// The other.
        second: String,
    },
    /// A name outside the prefix (should not happen) or one that maps to nothing.
    #[error("SSM parameter '{name}' does not map to an environment variable under '{path}'")]
    BadName {
        /// The parameter.
        name: String,
        /// The prefix.
        path: String,
    },
    /// A parameter maps to a variable the app's environment already has.
    #[error("SSM parameter '{name}' maps to the environment variable {var}, which {what}; secrets may not replace it (allow it with [secrets] allow_override = [\"{var}\"])")]
    Override {
        /// The parameter.
        name: String,
        /// The variable.
        var: String,
        /// Where the variable comes from.
        what: &'static str,
    },
    /// The env file could not be written.
    #[error("writing env file '{path}': {source}")]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The variable name for parameter `name` under `prefix` (see the module docs).
#[must_use]
pub fn env_name(prefix: &str, name: &str) -> Option<String> {
    let rel = name.strip_prefix(prefix)?.trim_start_matches('/');
    if rel.is_empty() {
        return None;
    }
    let mut out: String = rel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Some(out)
}

/// The app's secret environment: variable → value, plus parameter → version.
#[derive(Clone, Debug, Default)]
pub struct SecretEnv {
    /// Variable → value.
    pub vars: BTreeMap<String, Secret>,
    /// Parameter name → version, the baseline of rotation polling.
    pub versions: BTreeMap<String, i64>,
    /// Variable → the parameter it comes from, for error messages.
    pub sources: BTreeMap<String, String>,
}

/// Maps `(name, value, version)` triples to variables; collisions are errors.
pub fn build_env(
    prefix: &str,
    params: Vec<(String, Secret, i64)>,
) -> Result<SecretEnv, SecretsError> {
    let mut env = SecretEnv::default();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for (name, value, version) in params {
        let var = env_name(prefix, &name).ok_or_else(|| SecretsError::BadName {
            name: name.clone(),
            path: prefix.to_owned(),
        })?;
        if let Some(first) = owner.get(&var) {
            let (first, second) = if *first < name {
                (first.clone(), name)
            } else {
                (name, first.clone())
            };
            return Err(SecretsError::Collision { var, first, second });
        }
        owner.insert(var.clone(), name.clone());
        env.sources.insert(var.clone(), name.clone());
        env.vars.insert(var, value);
        env.versions.insert(name, version);
    }
    Ok(env)
}

/// Variables the agent itself sets, or that decide which code the app runs: PATH, HOME, USER,
/// LOGNAME, SHELL, and the dynamic loader's `LD_*`.
#[must_use]
pub fn protected(var: &str) -> bool {
    matches!(var, "PATH" | "HOME" | "USER" | "LOGNAME" | "SHELL") || var.starts_with("LD_")
}

/// Refuses a secret that would replace a protected variable ([`protected`]) or a key of the
/// app's non-secret environment `env` (`app.env` and what the agent adds to it), unless
/// `allow` names it. The error names the parameter and the variable, never a value.
pub fn refuse_overrides(
    secrets: &SecretEnv,
    env: &BTreeMap<String, String>,
    allow: &BTreeSet<String>,
) -> Result<(), SecretsError> {
    for var in secrets.vars.keys() {
        if allow.contains(var) {
            continue;
        }
        let what = if env.contains_key(var) {
            "the app's non-secret environment sets (app.env or the agent)"
        } else if protected(var) {
            "the agent sets or which decides what code the app runs (PATH, HOME, USER, LOGNAME, SHELL, LD_*)"
        } else {
            continue;
        };
        return Err(SecretsError::Override {
            name: secrets.sources.get(var).cloned().unwrap_or_default(),
            var: var.clone(),
            what,
        });
    }
    Ok(())
}

fn fetch_err<E>(path: &str, e: &aws_sdk_ssm::error::SdkError<E>) -> SecretsError
where
    E: std::error::Error + aws_sdk_ssm::error::ProvideErrorMetadata + 'static,
{
    SecretsError::Fetch {
        path: path.to_owned(),
        message: DisplayErrorContext(e).to_string(),
    }
}

/// GetParametersByPath: recursive, decrypted, every page. Empty → [`SecretsError::Empty`].
pub async fn fetch(ssm: &aws_sdk_ssm::Client, prefix: &str) -> Result<SecretEnv, SecretsError> {
    let mut params = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = ssm
            .get_parameters_by_path()
            .path(prefix)
            .recursive(true)
            .with_decryption(true)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| fetch_err(prefix, &e))?;
        for p in out.parameters() {
            let (Some(name), Some(value)) = (p.name(), p.value()) else {
                continue;
            };
            params.push((name.to_owned(), Secret::new(value.to_owned()), p.version()));
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    if params.is_empty() {
        return Err(SecretsError::Empty {
            path: prefix.to_owned(),
        });
    }
    build_env(prefix, params)
}

/// Versions only (no values): DescribeParameters with a recursive Path filter, every page.
/// The cheapest call that returns versions: 50 parameters per call, nothing decrypted.
pub async fn versions(
    ssm: &aws_sdk_ssm::Client,
    prefix: &str,
) -> Result<BTreeMap<String, i64>, SecretsError> {
    let filter = ParameterStringFilter::builder()
        .key("Path")
        .option("Recursive")
        .values(prefix)
        .build()
        .expect("key is set");
    let mut out_map = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let out = ssm
            .describe_parameters()
            .parameter_filters(filter.clone())
            .max_results(50)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| fetch_err(prefix, &e))?;
        for p in out.parameters() {
            if let Some(name) = p.name() {
                out_map.insert(name.to_owned(), p.version());
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    Ok(out_map)
}

/// Quotes a value for an env file read by systemd `EnvironmentFile=` or `set -a; . file`.
fn quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' | '\\' | '$' | '`' => {
                s.push('\\');
                s.push(c);
            }
            '\n' => s.push_str("\\n"),
            _ => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Writes `KEY="value"` lines to `path` atomically (temp file in the same directory, fsync,
/// rename), mode 0600 from creation, owned by `owner` (uid, gid) when given.
pub fn write_env_file(
    path: &Path,
    env: &SecretEnv,
    owner: Option<(u32, u32)>,
) -> Result<(), SecretsError> {
    let err = |source| SecretsError::EnvFile {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| err(std::io::Error::other("not a file name")))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        for (k, v) in &env.vars {
            writeln!(f, "{k}={}", quote(v.expose()))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// Parameters whose version differs between `old` and `new` (added, removed or changed).
#[must_use]
pub fn changed(old: &BTreeMap<String, i64>, new: &BTreeMap<String, i64>) -> Vec<String> {
    let mut out: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    out.sort();
    out
}

/// A short, stable id of a set of versions: the lease key of one rotation (FNV-1a, hex).
#[must_use]
pub fn versions_id(v: &BTreeMap<String, i64>) -> String {
    let mut bytes = Vec::new();
    for (k, ver) in v {
        bytes.extend(k.bytes().chain(ver.to_string().bytes()));
        bytes.push(0);
    }
    format!("{:016x}", crate::fnv::fnv1a(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn test_env_name_rule() {
        assert_eq!(
            env_name("/app/prod", "/app/prod/db/password").as_deref(),
            Some("DB_PASSWORD")
        );
        assert_eq!(
            env_name("/app/prod", "/app/prod/DB_CONNECTION_STRING").as_deref(),
            Some("DB_CONNECTION_STRING")
        );
        assert_eq!(
            env_name("/app/prod", "/app/prod/api-key.v2").as_deref(),
            Some("API_KEY_V2")
        );
        assert_eq!(
            env_name("/app/prod", "/app/prod/3scale").as_deref(),
            Some("_3SCALE")
        );
        assert_eq!(env_name("/app/prod", "/other/x"), None);
    }

    #[test]
    fn test_collision_names_both() {
        let p = vec![
            ("/a/db/password".to_owned(), Secret::new("x".into()), 1),
            ("/a/db-password".to_owned(), Secret::new("y".into()), 1),
        ];
        let e = build_env("/a", p).unwrap_err().to_string();
        assert!(
            e.contains("/a/db-password")
                && e.contains("/a/db/password")
                && e.contains("DB_PASSWORD"),
            "{e}"
        );
        assert!(!e.contains('x') || !e.contains("\"x\""));
    }

    #[test]
    fn test_secret_never_prints() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let env = build_env("/a", vec![("/a/k".into(), s, 1)]).unwrap();
        assert!(!format!("{env:?}").contains("hunter2"));
    }

    #[test]
    fn test_env_file_is_private_and_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app.env");
        let env = build_env(
            "/a",
            vec![("/a/k".into(), Secret::new("va\"l$ue\nx".into()), 1)],
        )
        .unwrap();
        write_env_file(
            &p,
            &env,
            Some((
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )),
        )
        .unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "K=\"va\\\"l\\$ue\\nx\"\n"
        );
        // Rewriting replaces it atomically; no temp files are left.
        write_env_file(&p, &env, None).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn test_changed_and_versions_id() {
        let a: BTreeMap<String, i64> = [("/a/x".to_owned(), 1), ("/a/y".to_owned(), 1)].into();
        let mut b = a.clone();
        assert!(changed(&a, &b).is_empty());
        assert_eq!(versions_id(&a), versions_id(&b));
        b.insert("/a/x".into(), 2);
        b.remove("/a/y");
        assert_eq!(changed(&a, &b), vec!["/a/x".to_owned(), "/a/y".to_owned()]);
        assert_ne!(versions_id(&a), versions_id(&b));
        // The lease key of a rotation: agents of different versions must agree on it.
        let v: BTreeMap<String, i64> =
            [("/app/db".to_owned(), 3), ("/app/key".to_owned(), 12)].into();
        assert_eq!(versions_id(&v), "bf8d603fb4d2125c");
    }

    #[test]
    fn test_overrides_are_refused_unless_allowed() {
        let env = |names: &[&str]| {
            build_env(
                "/a",
                names
                    .iter()
                    .map(|n| (format!("/a/{n}"), Secret::new("hunter2".into()), 1))
                    .collect(),
            )
            .unwrap()
        };
        let app_env: BTreeMap<String, String> = [("PORT".to_owned(), "8080".to_owned())].into();
        let none = BTreeSet::new();
        refuse_overrides(&env(&["db/password", "api-key"]), &app_env, &none).unwrap();
        for (param, var) in [
            ("path", "PATH"),
            ("ld/preload", "LD_PRELOAD"),
            ("ld-library-path", "LD_LIBRARY_PATH"),
            ("home", "HOME"),
            ("user", "USER"),
            ("logname", "LOGNAME"),
            ("shell", "SHELL"),
            ("port", "PORT"),
        ] {
            let e = refuse_overrides(&env(&["ok", param]), &app_env, &none)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("'/a/{param}'")) && e.contains(&format!(" {var},")),
                "{e}"
            );
            assert!(e.contains("allow_override"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
            let allow: BTreeSet<String> = [var.to_owned()].into();
            refuse_overrides(&env(&["ok", param]), &app_env, &allow).unwrap();
        }
        // A name that only starts like a protected one is fine.
        refuse_overrides(&env(&["pathfinder", "homepage"]), &app_env, &none).unwrap();
    }
}
