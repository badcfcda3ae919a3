//! AMIs made by bake: the inputs hash, provenance tags, the bake cache and pruning.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aws_sdk_ec2::types::{Filter, Image, Tag};
use aws_smithy_types::error::display::DisplayErrorContext;
use sha2::{Digest, Sha256};

/// Tag with the hash of every bake input; marks an AMI as made by bake.
pub const TAG_INPUTS_HASH: &str = "bake:inputs-hash";
/// Tag with the git commit of the template's repository.
pub const TAG_GIT_COMMIT: &str = "bake:git-commit";
/// Tag with the version of bake that made the AMI.
pub const TAG_VERSION: &str = "bake:version";
/// Tag with the build time (RFC 3339).
pub const TAG_BUILT_AT: &str = "bake:built-at";
/// Tag with the application version (`app.version`), when configured.
pub const TAG_APP_VERSION: &str = "bake:app-version";

/// Errors about AMIs.
#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    /// An input cannot be read.
    #[error("{key}: cannot read '{path}': {source}")]
    Input {
        /// The config key that names it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An EC2 call failed.
    #[error("{call} ({resource}): {}", DisplayErrorContext(.source.as_ref()))]
    Ec2 {
        /// The API call.
        call: &'static str,
        /// What it was about.
        resource: String,
        /// The SDK's error (an `aws_sdk_ec2::error::SdkError` of `call`'s operation error, to
        /// `downcast_ref` for the service error).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An EC2 call answered, but not with the one image asked for.
    #[error("{call} ({resource}): {message}")]
    NoImage {
        /// The API call.
        call: &'static str,
        /// What it was about.
        resource: String,
        /// What it answered.
        message: String,
    },
}

pub(crate) fn ec2_err<
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
>(
    call: &'static str,
    resource: impl Into<String>,
) -> impl FnOnce(aws_sdk_ec2::error::SdkError<E, R>) -> AmiError {
    let resource = resource.into();
    move |e| AmiError::Ec2 {
        call,
        resource,
        source: Box::new(e),
    }
}

/// Tag with the template's name (its directory or file name): the AMIs one template made, among
/// which `bake build` finds the one it would otherwise have reused.
pub const TAG_TEMPLATE: &str = "bake:template";
/// When `bake prune` deprecated the AMI (RFC 3339, UTC): its disable delay counts from here.
pub const TAG_DEPRECATED_AT: &str = "bake:deprecated-at";
/// When `bake prune` disabled the AMI (RFC 3339, UTC): its deregistration delay counts from here.
pub const TAG_DISABLED_AT: &str = "bake:disabled-at";
/// Prefix of the tags that record each input's digest (`bake:input:systemd/bake-agent.service`).
pub const TAG_INPUT_PREFIX: &str = "bake:input:";
/// Most input tags an AMI gets: AWS allows 50 tags per resource, and the template and the
/// provenance take about 15. Beyond this, files are recorded per directory.
pub const MAX_INPUT_TAGS: usize = 30;
/// Hex digits of an input's digest kept in its tag (64 bits: enough to tell a change).
const TAG_DIGEST_LEN: usize = 16;

/// Everything that determines an AMI's content.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Template directory or file.
    pub template: &'a Path,
    /// Where Packer runs (relative paths in variables resolve from here).
    pub workdir: &'a Path,
    /// Variables passed to Packer, without the provenance values, the agent binary and the app
    /// release (their own inputs below). A value naming an existing file or directory is hashed
    /// by content.
    pub variables: &'a BTreeMap<String, String>,
    /// The agent binary.
    pub agent_binary: Option<&'a Path>,
    /// The app release: a file or directory (hashed by content) or a value (a version, a URL).
    pub app_release: Option<AppRelease<'a>>,
    /// The base AMI the build starts from, resolved before the build.
    pub base_ami: Option<&'a str>,
    /// The package indexes read before the build: (key, digest) ([`crate::package_index`]).
    pub package_indexes: &'a [(String, String)],
}

/// What `app_release` is.
#[derive(Clone, Copy, Debug)]
pub enum AppRelease<'a> {
    /// A file or directory.
    Path(&'a Path),
    /// A value the template interprets.
    Value(&'a str),
}

/// Template-directory entries that are not inputs: Packer's cache and outputs, editor and VCS
/// files (dot files), bake's own staging directory (`.bake-packer-*`).
fn skipped(name: &str) -> bool {
    name.starts_with('.')
        || name == "packer_cache"
        || name == "packer-manifest.json"
        || name == "crash.log"
}

fn files_under(dir: &Path, all: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !all && skipped(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            files_under(&path, all, out)?;
        } else if meta.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> String {
    bake_common::sbom::sha256_hex(bytes)
}

/// Digest of a file's content, or of a directory's files (relative path and content, sorted;
/// with `all`, dot files too).
fn path_digest(path: &Path, all: bool) -> std::io::Result<String> {
    if !path.is_dir() {
        return Ok(sha256(&std::fs::read(path)?));
    }
    let mut files = Vec::new();
    files_under(path, all, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        let rel = f
            .strip_prefix(path)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        h.update((rel.len() as u64).to_be_bytes());
        h.update(rel.as_bytes());
        h.update(sha256(&std::fs::read(f)?).as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The paths a template names as `${path.root}/REL` (a file provisioner's `source`, a script,
/// `user_data_file` …), relative to `dir`. A post-processor's `output` is not an input.
#[must_use]
pub fn referenced_paths(text: &str) -> Vec<String> {
    const ROOT: &str = "${path.root}/";
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('#') || t.starts_with("//") || t.starts_with("output") {
            continue;
        }
        let mut rest = t;
        while let Some(at) = rest.find(ROOT) {
            rest = &rest[at + ROOT.len()..];
            let end = rest
                .find(|c: char| c == '"' || c == '}' || c == ',' || c.is_whitespace())
                .unwrap_or(rest.len());
            let rel = rest[..end].trim_end_matches('/');
            if !rel.is_empty() && !rel.contains("${") {
                out.push(rel.to_owned());
            }
        }
    }
    out
}

/// Every input of an image, each with its digest (the base AMI with its id): what the inputs
/// hash is made of, and what `bake build` compares with the AMI it would otherwise reuse.
///
/// Keys: `base-ami`, `agent`, `app`, `var:NAME`, `index:URL` for each package index
/// (`packer.package_indexes`), and `file:PATH` for every file of the template
/// directory and every file or directory outside it that the template names with
/// `${path.root}/…` (`../systemd/` in the shipped one), PATH relative to the template
/// directory's parent (`packer/scripts/harden.sh`, `systemd/bake-agent.service`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: BTreeMap<String, String>,
}

impl Manifest {
    /// Reads every input.
    pub fn collect(inputs: &Inputs<'_>) -> Result<Self, AmiError> {
        let read_err = |key: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| AmiError::Input { key, path, source }
        };
        let mut entries = BTreeMap::new();
        let (dir, files) = if inputs.template.is_dir() {
            let mut files = Vec::new();
            files_under(inputs.template, false, &mut files)
                .map_err(read_err("packer.template", inputs.template))?;
            (inputs.template.to_path_buf(), files)
        } else {
            let dir = inputs
                .template
                .parent()
                .map_or_else(PathBuf::new, Path::to_path_buf);
            (dir, vec![inputs.template.to_path_buf()])
        };
        let root = dir.parent().map_or_else(PathBuf::new, Path::to_path_buf);
        let key_of = |p: &Path| {
            let p = normalize(p);
            format!(
                "file:{}",
                p.strip_prefix(&root).unwrap_or(&p).to_string_lossy()
            )
        };
        for f in &files {
            let digest = path_digest(f, false).map_err(read_err("packer.template", f))?;
            entries.insert(key_of(f), digest);
        }
        // What the template names outside its directory (uploaded units, docs …).
        for f in files
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(".pkr.hcl"))
        {
            let text = std::fs::read_to_string(f).map_err(read_err("packer.template", f))?;
            for rel in referenced_paths(&text) {
                let path = normalize(&dir.join(&rel));
                if path.starts_with(normalize(&dir)) || !path.exists() {
                    continue;
                }
                let mut named = Vec::new();
                if path.is_dir() {
                    files_under(&path, false, &mut named)
                        .map_err(read_err("packer.template", &path))?;
                } else {
                    named.push(path.clone());
                }
                for f in named {
                    let digest = path_digest(&f, false).map_err(read_err("packer.template", &f))?;
                    entries.insert(key_of(&f), digest);
                }
            }
        }
        for (k, v) in inputs.variables {
            let candidate = if Path::new(v).is_absolute() {
                PathBuf::from(v)
            } else {
                inputs.workdir.join(v)
            };
            let digest = if !v.is_empty() && candidate.exists() {
                path_digest(&candidate, true).map_err(read_err("packer.variables", &candidate))?
            } else {
                sha256(v.as_bytes())
            };
            entries.insert(format!("var:{k}"), digest);
        }
        if let Some(agent) = inputs.agent_binary {
            let digest =
                path_digest(agent, true).map_err(read_err("packer.agent_binary", agent))?;
            entries.insert("agent".to_owned(), digest);
        }
        match inputs.app_release {
            Some(AppRelease::Path(p)) => {
                let digest = path_digest(p, true).map_err(read_err("app.release", p))?;
                entries.insert("app".to_owned(), digest);
            }
            Some(AppRelease::Value(v)) => {
                entries.insert("app".to_owned(), sha256(v.as_bytes()));
            }
            None => {}
        }
        if let Some(base) = inputs.base_ami {
            entries.insert("base-ami".to_owned(), base.to_owned());
        }
        for (k, digest) in inputs.package_indexes {
            entries.insert(k.clone(), digest.clone());
        }
        Ok(Self { entries })
    }

    /// The inputs hash: sha256 over every key and digest (length-prefixed, sorted), lowercase hex.
    #[must_use]
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.entries {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
        hex(&h.finalize())
    }

    /// The entries as recorded in tags: at most [`MAX_INPUT_TAGS`] (files grouped by directory
    /// beyond that), digests shortened.
    #[must_use]
    pub fn recorded(&self) -> BTreeMap<String, String> {
        let mut entries = self.entries.clone();
        // Group files by ever shorter directory prefixes until the entries fit.
        let mut depth = entries
            .keys()
            .filter_map(|k| k.strip_prefix("file:"))
            .map(|p| p.matches('/').count())
            .max()
            .unwrap_or(0);
        while entries.len() > MAX_INPUT_TAGS && depth > 0 {
            depth -= 1;
            let mut grouped: BTreeMap<String, Sha256> = BTreeMap::new();
            let mut rest = BTreeMap::new();
            for (k, v) in entries {
                match k.strip_prefix("file:") {
                    Some(p) if p.matches('/').count() > depth => {
                        let dir: Vec<&str> = p.split('/').take(depth + 1).collect();
                        let h = grouped
                            .entry(format!("file:{}/", dir.join("/")))
                            .or_default();
                        h.update(p.as_bytes());
                        h.update(v.as_bytes());
                    }
                    _ => {
                        rest.insert(k, v);
                    }
                }
            }
            rest.extend(grouped.into_iter().map(|(k, h)| (k, hex(&h.finalize()))));
            entries = rest;
        }
        entries
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "base-ami" {
                    v
                } else {
                    v.chars().take(TAG_DIGEST_LEN).collect()
                };
                (k, v)
            })
            .collect()
    }

    /// The input tags of an AMI built from these inputs.
    #[must_use]
    pub fn tags(&self) -> Vec<(String, String)> {
        self.recorded()
            .into_iter()
            .map(|(k, v)| (format!("{TAG_INPUT_PREFIX}{}", tag_key_safe(&k)), v))
            .collect()
    }

    /// What changed since `previous` (an AMI's input tags), for people: `base AMI ami-a →
    /// ami-b`, `systemd/bake-agent.service`, `variable instance_type`, `agent binary`,
    /// `app release`; `(new)` or `(gone)` after inputs only one side has. `None` when the AMI
    /// has no input tags (made before bake recorded them).
    #[must_use]
    pub fn changes_since(&self, previous: &Image) -> Option<Vec<String>> {
        let old: BTreeMap<String, String> = previous
            .tags()
            .iter()
            .filter_map(|t| {
                let k = t.key()?.strip_prefix(TAG_INPUT_PREFIX)?;
                Some((k.to_owned(), t.value().unwrap_or_default().to_owned()))
            })
            .collect();
        if old.is_empty() {
            return None;
        }
        let new: BTreeMap<String, String> = self
            .recorded()
            .into_iter()
            .map(|(k, v)| (tag_key_safe(&k), v))
            .collect();
        let name = |k: &str| -> String {
            match k {
                "agent" => "agent binary".to_owned(),
                "app" => "app release".to_owned(),
                "base-ami" => "base AMI".to_owned(),
                k => k
                    .strip_prefix("var:")
                    .map(|v| format!("variable {v}"))
                    .or_else(|| k.strip_prefix("file:").map(ToOwned::to_owned))
                    .or_else(|| {
                        k.strip_prefix("index:")
                            .map(|i| format!("package index {i}"))
                    })
                    .unwrap_or_else(|| k.to_owned()),
            }
        };
        let mut out = Vec::new();
        for (k, v) in &new {
            match old.get(k) {
                Some(o) if o == v => {}
                Some(o) if k == "base-ami" => out.push(format!("base AMI {o} → {v}")),
                Some(_) => out.push(name(k)),
                None if k == "base-ami" => out.push(format!("base AMI {v} (new)")),
                None => out.push(format!("{} (new)", name(k))),
            }
        }
        for k in old.keys().filter(|k| !new.contains_key(*k)) {
            out.push(format!("{} (gone)", name(k)));
        }
        Some(out)
    }
}

/// A tag key AWS accepts: letters, digits, spaces and `+ - = . _ : / @`; anything else is `_`.
fn tag_key_safe(k: &str) -> String {
    k.chars()
        .map(|c| {
            if c.is_alphanumeric() || " +-=._:/@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The inputs hash of `inputs` ([`Manifest::hash`]).
pub fn inputs_hash(inputs: &Inputs<'_>) -> Result<String, AmiError> {
    Ok(Manifest::collect(inputs)?.hash())
}

/// Resolves a template's `source_ami_filter` (`{filters: {NAME: VALUE or [VALUES]}, owners:
/// [..], most_recent}`, as `packer console` prints it) with DescribeImages, as Packer would:
/// the newest available match with `most_recent`, else exactly one match.
pub async fn resolve_filter(
    ec2: &aws_sdk_ec2::Client,
    filter: &serde_json::Value,
) -> Result<String, AmiError> {
    let shown = filter.to_string();
    let resource = format!("source_ami_filter {shown}");
    let err = |message: String| AmiError::NoImage {
        call: "DescribeImages",
        resource: resource.clone(),
        message,
    };
    let mut req = ec2.describe_images();
    for o in filter["owners"].as_array().into_iter().flatten() {
        if let Some(o) = o.as_str() {
            req = req.owners(o);
        }
    }
    if let Some(filters) = filter["filters"].as_object() {
        for (name, value) in filters {
            let values: Vec<String> = match value {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(ToOwned::to_owned))
                    .collect(),
                serde_json::Value::String(v) => vec![v.clone()],
                other => vec![other.to_string()],
            };
            req = req.filters(
                Filter::builder()
                    .name(name)
                    .set_values(Some(values))
                    .build(),
            );
        }
    }
    req = req.filters(Filter::builder().name("state").values("available").build());
    let out = req
        .send()
        .await
        .map_err(ec2_err("DescribeImages", resource.clone()))?;
    let mut images = out.images().to_vec();
    images.sort_by(|a, b| b.creation_date().cmp(&a.creation_date()));
    let most_recent = filter["most_recent"].as_bool().unwrap_or(false);
    match images.as_slice() {
        [] => Err(err("no image matches".into())),
        [_, _, ..] if !most_recent => Err(err(format!(
            "{} images match and most_recent is false",
            images.len()
        ))),
        [newest, ..] => Ok(newest.image_id().unwrap_or_default().to_owned()),
    }
}

/// The newest available AMI of this account that `template_name` made: the one `bake build`
/// would reuse had its inputs not changed.
pub async fn latest_of_template(
    ec2: &aws_sdk_ec2::Client,
    template_name: &str,
) -> Result<Option<Image>, AmiError> {
    let out = ec2
        .describe_images()
        .owners("self")
        .filters(
            Filter::builder()
                .name(format!("tag:{TAG_TEMPLATE}"))
                .values(template_name)
                .build(),
        )
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .map_err(ec2_err(
            "DescribeImages",
            format!("{TAG_TEMPLATE}={template_name}"),
        ))?;
    let mut images = out.images().to_vec();
    images.retain(|i| tag(i, TAG_TEMPLATE) == Some(template_name));
    images.sort_by(|a, b| b.creation_date().cmp(&a.creation_date()));
    Ok(images.into_iter().next())
}

/// The provenance tags of a build.
#[must_use]
pub fn provenance_tags(
    inputs_hash: &str,
    git_commit: &str,
    built_at: &str,
    app_version: Option<&str>,
) -> Vec<(String, String)> {
    let mut tags = vec![
        (TAG_INPUTS_HASH.to_owned(), inputs_hash.to_owned()),
        (TAG_GIT_COMMIT.to_owned(), git_commit.to_owned()),
        (
            TAG_VERSION.to_owned(),
            bake_common::clap_version!().to_owned(),
        ),
        (TAG_BUILT_AT.to_owned(), built_at.to_owned()),
    ];
    if let Some(v) = app_version {
        tags.push((TAG_APP_VERSION.to_owned(), v.to_owned()));
    }
    tags
}

/// The git commit of the repository holding `dir` (`unknown` outside one).
pub async fn git_commit(dir: &Path) -> String {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// Available bake-made AMIs of this account with `inputs_hash`, newest first.
pub async fn find_cached(
    ec2: &aws_sdk_ec2::Client,
    inputs_hash: &str,
) -> Result<Option<Image>, AmiError> {
    let out = ec2
        .describe_images()
        .owners("self")
        .filters(
            Filter::builder()
                .name(format!("tag:{TAG_INPUTS_HASH}"))
                .values(inputs_hash)
                .build(),
        )
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .map_err(ec2_err(
            "DescribeImages",
            format!("{TAG_INPUTS_HASH}={inputs_hash}"),
        ))?;
    let mut images = out.images().to_vec();
    // The filter is authoritative on AWS; checking again costs nothing.
    images.retain(|i| tag(i, TAG_INPUTS_HASH) == Some(inputs_hash));
    images.sort_by(|a, b| b.creation_date().cmp(&a.creation_date()));
    Ok(images.into_iter().next())
}

/// The value of tag `key` on `image`.
#[must_use]
pub fn tag<'a>(image: &'a Image, key: &str) -> Option<&'a str> {
    image
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(Tag::value)
}

/// The EBS snapshots behind `image`.
#[must_use]
pub fn snapshots(image: &Image) -> Vec<String> {
    image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(ToOwned::to_owned))
        .collect()
}

/// What `bake status` and the rollout view show of an AMI.
#[derive(Clone, Debug, Default)]
pub struct ImageFacts {
    /// The AMI's `bake:app-version` tag.
    pub app_version: Option<String>,
    /// Its creation date (RFC 3339, as EC2 says it).
    pub created: Option<String>,
}

/// The app versions and creation dates of AMIs `ids`, by id; an AMI that is gone
/// (deregistered) is left out. One `DescribeImages` by `image-id` filter, not by id: one id that
/// no longer exists would fail the whole call.
///
/// # Errors
/// `DescribeImages` failed.
pub async fn facts(
    ec2: &aws_sdk_ec2::Client,
    ids: &BTreeSet<String>,
) -> Result<
    BTreeMap<String, ImageFacts>,
    aws_sdk_ec2::error::SdkError<aws_sdk_ec2::operation::describe_images::DescribeImagesError>,
> {
    let mut facts = BTreeMap::new();
    if ids.is_empty() {
        return Ok(facts);
    }
    let filter = Filter::builder()
        .name("image-id")
        .set_values(Some(ids.iter().cloned().collect()))
        .build();
    let out = ec2.describe_images().filters(filter).send().await?;
    for i in out.images() {
        let Some(id) = i.image_id() else { continue };
        let app_version = i
            .tags()
            .iter()
            .find(|t| t.key() == Some(TAG_APP_VERSION))
            .and_then(|t| t.value())
            .map(ToOwned::to_owned);
        facts.insert(
            id.to_owned(),
            ImageFacts {
                app_version,
                created: i.creation_date().map(ToOwned::to_owned),
            },
        );
    }
    Ok(facts)
}

/// Describes one AMI.
pub async fn describe(ec2: &aws_sdk_ec2::Client, ami: &str) -> Result<Image, AmiError> {
    let out = ec2
        .describe_images()
        .image_ids(ami)
        .send()
        .await
        .map_err(ec2_err("DescribeImages", ami))?;
    out.images()
        .first()
        .cloned()
        .ok_or_else(|| AmiError::NoImage {
            call: "DescribeImages",
            resource: ami.to_owned(),
            message: "no such image".into(),
        })
}

/// Tags the AMI and its snapshots with `tags` (idempotent; Packer may have set some already,
/// but Packer 1.6.6 against some endpoints does not tag snapshots).
pub async fn tag_image(
    ec2: &aws_sdk_ec2::Client,
    image: &Image,
    tags: &[(String, String)],
) -> Result<(), AmiError> {
    let ami = image.image_id().unwrap_or_default().to_owned();
    let mut req = ec2.create_tags().resources(&ami);
    for s in snapshots(image) {
        req = req.resources(s);
    }
    for (k, v) in tags {
        req = req.tags(Tag::builder().key(k).value(v).build());
    }
    req.send().await.map_err(ec2_err("CreateTags", ami))?;
    Ok(())
}

/// Tags the AMI alone with `tags`.
pub async fn tag_image_only(
    ec2: &aws_sdk_ec2::Client,
    ami: &str,
    tags: &[(String, String)],
) -> Result<(), AmiError> {
    if tags.is_empty() {
        return Ok(());
    }
    let mut req = ec2.create_tags().resources(ami);
    for (k, v) in tags {
        req = req.tags(Tag::builder().key(k).value(v).build());
    }
    req.send().await.map_err(ec2_err("CreateTags", ami))?;
    Ok(())
}

/// Makes every instance of the AMI require IMDSv2 (`ImdsSupport = v2.0`; AWS cannot undo it).
/// Packer 1.6.6 has no `imds_support` option, so bake sets it after every build, whatever Packer.
pub async fn require_imdsv2(ec2: &aws_sdk_ec2::Client, image: &Image) -> Result<(), AmiError> {
    let ami = image.image_id().unwrap_or_default().to_owned();
    if image.imds_support().map(|v| v.as_str()) == Some("v2.0") {
        return Ok(());
    }
    ec2.modify_image_attribute()
        .image_id(&ami)
        .imds_support(
            aws_sdk_ec2::types::AttributeValue::builder()
                .value("v2.0")
                .build(),
        )
        .send()
        .await
        .map_err(ec2_err("ModifyImageAttribute", ami))?;
    Ok(())
}

/// Every bake-made AMI of this account (tagged `bake:inputs-hash`), the deprecated and the
/// disabled ones too (`bake prune` retires in stages: DescribeImages leaves disabled AMIs out
/// unless asked).
pub async fn list_baked(ec2: &aws_sdk_ec2::Client) -> Result<Vec<Image>, AmiError> {
    let out = ec2
        .describe_images()
        .owners("self")
        .include_deprecated(true)
        .include_disabled(true)
        .filters(
            Filter::builder()
                .name("tag-key")
                .values(TAG_INPUTS_HASH)
                .build(),
        )
        .send()
        .await
        .map_err(ec2_err(
            "DescribeImages",
            format!("tag-key={TAG_INPUTS_HASH}"),
        ))?;
    let mut images = out.images().to_vec();
    images.retain(|i| tag(i, TAG_INPUTS_HASH).is_some());
    Ok(images)
}

/// AMIs of instances that are not terminated, among `candidates`: id → why it is in use.
pub async fn used_by_instances(
    ec2: &aws_sdk_ec2::Client,
    candidates: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>, AmiError> {
    let mut used = BTreeMap::new();
    if candidates.is_empty() {
        return Ok(used);
    }
    let mut pages = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("image-id")
                .set_values(Some(candidates.iter().cloned().collect()))
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .values("shutting-down")
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(ec2_err("DescribeInstances", "image-id filter"))?;
        for r in page.reservations() {
            for i in r.instances() {
                if let Some(ami) = i.image_id() {
                    if candidates.contains(ami) {
                        used.entry(ami.to_owned()).or_insert_with(|| {
                            format!("used by instance {}", i.instance_id().unwrap_or("?"))
                        });
                    }
                }
            }
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn test_inputs_hash_is_deterministic_and_sensitive() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("packer");
        write(
            &dir.join("a.pkr.hcl"),
            "provisioner \"file\" {\n  source = \"${path.root}/../systemd/\"\n}\npost-processor \"manifest\" {\n  output = \"${path.root}/../packer-manifest.json\"\n}\n",
        );
        write(&dir.join("scripts/x.sh"), "x");
        write(&dir.join("packer_cache/junk"), "1");
        write(&root.path().join("systemd/bake-agent.service"), "[Unit]");
        let agent = root.path().join("agent");
        write(&agent, "bin");
        let app = root.path().join("app");
        write(&app.join("server.js"), "v1");
        let vars = BTreeMap::from([("region".to_owned(), "us-east-1".to_owned())]);
        let inputs = |vars: &BTreeMap<String, String>, base: &'static str| {
            Manifest::collect(&Inputs {
                package_indexes: &[],
                template: &dir,
                workdir: &dir,
                variables: vars,
                agent_binary: Some(&agent),
                app_release: Some(AppRelease::Path(&app)),
                base_ami: Some(base),
            })
            .unwrap()
        };
        let m1 = inputs(&vars, "ami-a");
        let h1 = m1.hash();
        assert_eq!(h1.len(), 64);
        assert_eq!(h1, inputs(&vars, "ami-a").hash());
        // Build outputs and caches are not inputs.
        write(&dir.join("packer_cache/junk"), "2");
        write(&dir.join("packer-manifest.json"), "{}");
        write(&root.path().join("packer-manifest.json"), "{}");
        write(&dir.join(".bake-packer-x/y"), "z");
        assert_eq!(
            h1,
            inputs(&vars, "ami-a").hash(),
            "nothing the build writes"
        );
        // Every input is: a script, a unit outside the template dir, a file of a directory
        // release, the agent, a variable, the base AMI.
        let changed = |what: &str, m: Manifest| {
            assert_ne!(h1, m.hash(), "{what}");
            m.changes_since(&image_with(&m1)).unwrap()
        };
        write(&dir.join("scripts/x.sh"), "y");
        assert_eq!(
            changed("script", inputs(&vars, "ami-a")),
            vec!["packer/scripts/x.sh"]
        );
        write(&dir.join("scripts/x.sh"), "x");
        write(&root.path().join("systemd/bake-agent.service"), "[Unit]\n#");
        assert_eq!(
            changed("unit", inputs(&vars, "ami-a")),
            vec!["systemd/bake-agent.service"]
        );
        write(&root.path().join("systemd/bake-agent.service"), "[Unit]");
        write(&app.join("server.js"), "v2");
        assert_eq!(changed("app", inputs(&vars, "ami-a")), vec!["app release"]);
        write(&app.join("server.js"), "v1");
        assert_eq!(
            changed("base", inputs(&vars, "ami-b")),
            vec!["base AMI ami-a → ami-b"]
        );
        let vars2 = BTreeMap::from([("region".to_owned(), "eu-west-1".to_owned())]);
        assert_eq!(
            changed("var", inputs(&vars2, "ami-a")),
            vec!["variable region"]
        );
        write(&agent, "bin2");
        assert_eq!(
            changed("agent", inputs(&vars, "ami-a")),
            vec!["agent binary"]
        );
        write(&agent, "bin");
        assert_eq!(h1, inputs(&vars, "ami-a").hash(), "back to the same inputs");
        write(&dir.join("scripts/new.sh"), "n");
        assert_eq!(
            changed("new file", inputs(&vars, "ami-a")),
            vec!["packer/scripts/new.sh (new)"]
        );
        let e = Manifest::collect(&Inputs {
            package_indexes: &[],
            template: &dir,
            workdir: &dir,
            variables: &vars,
            agent_binary: Some(&dir.join("nope")),
            app_release: None,
            base_ami: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("packer.agent_binary: "), "{e}");
    }

    fn image_with(m: &Manifest) -> Image {
        let mut b = Image::builder().image_id("ami-prev");
        for (k, v) in m.tags() {
            b = b.tags(Tag::builder().key(k).value(v).build());
        }
        b.build()
    }

    #[test]
    fn test_many_inputs_are_recorded_per_directory() {
        let mut m = Manifest::default();
        for i in 0..40 {
            m.entries
                .insert(format!("file:packer/scripts/s{i}.sh"), format!("{i:064}"));
        }
        m.entries.insert("base-ami".into(), "ami-1".into());
        let r = m.recorded();
        assert!(r.len() <= MAX_INPUT_TAGS, "{r:?}");
        assert!(r.contains_key("file:packer/scripts/"), "{r:?}");
        assert_eq!(r["base-ami"], "ami-1");
        assert!(m
            .tags()
            .iter()
            .all(|(k, v)| k.len() <= 128 && v.len() <= 256));
    }

    #[test]
    fn test_referenced_paths() {
        let text = "  source = \"${path.root}/../systemd/\"\n  scripts = [\"${path.root}/scripts/a.sh\", \"${path.root}/scripts/b.sh\"]\n  output = \"${path.root}/../packer-manifest.json\"\n  # \"${path.root}/../commented\"\n  source = var.x == \"\" ? \"${path.root}/files/agent.toml\" : var.x\n";
        assert_eq!(
            referenced_paths(text),
            vec![
                "../systemd",
                "scripts/a.sh",
                "scripts/b.sh",
                "files/agent.toml"
            ]
        );
    }
}
