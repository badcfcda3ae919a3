//! `bake build`: hash the inputs, reuse a cached AMI or run Packer, tag the result.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use crate::aws::Aws;

use crate::ami;
use crate::config::{PackerSettings, Settings};
use crate::local_image;
use crate::output::Progress;
use crate::packer::{self, PackerError};

/// Build options from the command line.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Build even when an AMI with the same inputs exists.
    pub force: bool,
    /// Overrides `app.release`.
    pub app_release: Option<String>,
}

/// A build's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BuildResult {
    /// The AMI in the configured region.
    pub image_id: String,
    /// Its region.
    pub region: String,
    /// Every `(region, AMI)` Packer made (empty when reused).
    pub artifacts: Vec<(String, String)>,
    /// An existing AMI with the same inputs hash was reused.
    pub reused: bool,
    /// The inputs hash.
    pub inputs_hash: String,
    /// The base AMI the build started from (resolved before the build), if the template names
    /// one (`source_ami` / `source_ami_filter`).
    pub base_ami: Option<String>,
    /// When built anew: the AMI this template made last, whose inputs differ.
    pub changed_since: Option<String>,
    /// The inputs that differ from `changed_since`'s (`base AMI ami-a → ami-b`,
    /// `systemd/bake-agent.service`, …).
    pub changes: Vec<String>,
    /// The image's SBOM as stored ([`crate::sbom`]); `None` when reused, or when there was
    /// none to store (`sbom_missing` says why).
    pub sbom: Option<crate::sbom::Stored>,
    /// Why a new image has no stored SBOM (the build printed none, no `[sbom] bucket`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom_missing: Option<String>,
    /// Seconds Packer ran.
    pub packer_secs: f64,
    /// Seconds the whole build took.
    pub total_secs: f64,
}

/// What can go wrong in a build, besides the errors of Packer ([`PackerError`]) and of the AMI
/// calls ([`ami::AmiError`]).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No region to build in.
    #[error("aws.region: no region (set aws.region in bake.toml or AWS_REGION)")]
    NoRegion,
    /// `packer console` printed something that is not the JSON asked for.
    #[error("packer.template: packer console printed {printed:?} for {expression}: {source}")]
    Console {
        /// What it printed.
        printed: String,
        /// What it was asked.
        expression: String,
        /// Why it is not JSON.
        source: serde_json::Error,
    },
    /// The template's `source_ami` cannot be described.
    #[error("the template's source_ami: {source}")]
    SourceAmi {
        /// Why.
        source: ami::AmiError,
    },
    /// The template's `source_ami_filter` names no single image.
    #[error("the template's base image: {source}")]
    BaseImage {
        /// Why.
        source: ami::AmiError,
    },
    /// Packer succeeded but made no AMI in the region.
    #[error("packer build finished without an AMI")]
    NoAmi,
    /// `bake validate`: `packer validate` refused the template (or could not be run).
    #[error(transparent)]
    Validate(PackerError),
    /// `bake validate`: `packer validate` took too long.
    #[error("packer validate did not finish within 5 minutes")]
    ValidateTimedOut,
}

/// The app release as passed to Packer: a value naming an existing file or directory (relative to
/// the config file's directory for `app.release`, to the current directory for `--app-release`)
/// becomes an absolute path, whose content is then hashed; anything else (a version, a URL) is
/// passed and hashed as is.
fn app_release(
    settings: &Settings,
    cli: Option<&str>,
) -> (Option<String>, Option<std::path::PathBuf>) {
    let (value, base) = match (cli, settings.app_release.as_deref()) {
        (Some(c), _) => (c, std::path::PathBuf::from(".")),
        (None, Some(c)) => (
            c,
            settings
                .path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(
                    || std::path::PathBuf::from("."),
                    std::path::Path::to_path_buf,
                ),
        ),
        (None, None) => return (None, None),
    };
    let candidate = base.join(value);
    if candidate.is_file() || candidate.is_dir() {
        let abs = std::fs::canonicalize(&candidate).unwrap_or(candidate);
        (Some(abs.display().to_string()), Some(abs))
    } else {
        (Some(value.to_owned()), None)
    }
}

/// Bake's own Packer variables (without provenance).
fn own_inputs(
    settings: &Settings,
    p: &PackerSettings,
    region: &str,
    app_release: Option<String>,
) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("region".to_owned(), region.to_owned());
    if let Some(r) = app_release {
        v.insert("app_release".to_owned(), r);
    }
    if let Some(a) = &p.agent_binary {
        v.insert("agent_binary".to_owned(), a.display().to_string());
    }
    if let Some(a) = &settings.app_version {
        v.insert("app_version".to_owned(), a.clone());
    }
    v
}

/// Where the image build keeps the image's SBOM (`bake-agent sbom --output`, cleanup.sh), in its
/// root file system.
const SBOM_IN_IMAGE: &str = "usr/share/bake/sbom.cdx.json";

/// The template's variable with the base AMI id, and its local value with the base image filter.
const SOURCE_AMI_VARIABLE: &str = "source_ami";
const SOURCE_AMI_FILTER_LOCAL: &str = "source_ami_filter";

/// The base AMI of the build, resolved before it: the template's `var.source_ami` if set (checked
/// to exist), else its `local.source_ami_filter` resolved with DescribeImages (the newest match).
/// Both are read with `packer console`, so they are the template's own values with this build's
/// variables. `None` (with a warning) when the template declares neither.
async fn base_ami(
    aws: &Aws,
    p: &PackerSettings,
    inv: &packer::Invocation,
    vars: &[String],
) -> anyhow::Result<Option<String>> {
    let has_var = inv.declared.iter().any(|d| d == SOURCE_AMI_VARIABLE);
    let has_filter = inv.locals.iter().any(|l| l == SOURCE_AMI_FILTER_LOCAL);
    let expression = match (has_var, has_filter) {
        (true, true) => format!("jsonencode({{ami = var.{SOURCE_AMI_VARIABLE}, filter = local.{SOURCE_AMI_FILTER_LOCAL}}})"),
        (true, false) => format!("jsonencode({{ami = var.{SOURCE_AMI_VARIABLE}}})"),
        (false, true) => format!("jsonencode({{filter = local.{SOURCE_AMI_FILTER_LOCAL}}})"),
        (false, false) => {
            tracing::warn!(template = %p.template.display(), "the template declares neither variable {SOURCE_AMI_VARIABLE} nor local {SOURCE_AMI_FILTER_LOCAL}: its base image is not part of the inputs hash");
            return Ok(None);
        }
    };
    let printed = packer::console(&p.binary, inv, vars, &expression).await?;
    let v: serde_json::Value =
        serde_json::from_str(&printed).map_err(|source| BuildError::Console {
            printed: printed.clone(),
            expression: expression.clone(),
            source,
        })?;
    if let Some(ami) = v["ami"].as_str().filter(|a| !a.is_empty()) {
        ami::describe(&aws.ec2, ami)
            .await
            .map_err(|source| BuildError::SourceAmi { source })?;
        return Ok(Some(ami.to_owned()));
    }
    if v["filter"].is_object() {
        let id = ami::resolve_filter(&aws.ec2, &v["filter"])
            .await
            .map_err(|source| BuildError::BaseImage { source })?;
        return Ok(Some(id));
    }
    Ok(None)
}

/// The template's name, tagged `bake:template`: its directory's (or file's) name.
fn template_name(p: &PackerSettings) -> String {
    p.template.file_name().map_or_else(
        || p.template.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// What a build starts from: the Packer invocation, bake's own variables, the base AMI and the
/// inputs manifest whose hash names the image ([`prepare`]).
struct Prepared {
    region: String,
    own: BTreeMap<String, String>,
    version: packer::Version,
    inv: packer::Invocation,
    base: Option<String>,
    manifest: ami::Manifest,
    local: bool,
}

/// Everything a build needs before it looks at the cache: `packer version`, the base AMI (`packer
/// console` and DescribeImages) and the inputs hash. Reads only: no AWS write, no Packer build.
async fn prepare(
    aws: &Aws,
    settings: &Settings,
    opts: &BuildOptions,
    progress: &Progress,
) -> anyhow::Result<Prepared> {
    let p = settings.packer()?;
    let region = aws.region.clone().ok_or(BuildError::NoRegion)?;
    let (release, release_path) = app_release(settings, opts.app_release.as_deref());
    let mut own = own_inputs(settings, p, &region, release.clone());
    let version = packer::version(&p.binary).await?;
    let inv = packer::invocation(&p.template, version)?;
    progress.step("resolving the base AMI");
    let base = base_ami(aws, p, &inv, &packer::var_args(&inv, &own, &p.variables)).await?;
    // Packer builds from exactly the AMI that was hashed (no second most_recent lookup).
    if let Some(b) = &base {
        if inv.declared.iter().any(|d| d == SOURCE_AMI_VARIABLE)
            && !p.variables.contains_key(SOURCE_AMI_VARIABLE)
        {
            own.insert(SOURCE_AMI_VARIABLE.to_owned(), b.clone());
        }
    }
    // The hash covers every input: the agent and app by content, the other variables (a value
    // naming a file or directory by its content), the base AMI; not the provenance values.
    let mut hashed: BTreeMap<String, String> = own
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "app_release" | "agent_binary" | SOURCE_AMI_VARIABLE
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    hashed.extend(p.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    let local = p.target == local_image::Target::Local;
    if local {
        hashed.insert("packer.target".to_owned(), "local".to_owned());
    }
    let app = match (&release_path, &release) {
        (Some(path), _) => Some(ami::AppRelease::Path(path)),
        (None, Some(v)) => Some(ami::AppRelease::Value(v)),
        (None, None) => None,
    };
    let mut indexes = Vec::new();
    for url in &p.package_indexes {
        progress.step(&format!("reading the package index {url}"));
        indexes.push((
            crate::package_index::key(url),
            crate::package_index::digest(url).await?,
        ));
    }
    let manifest = ami::Manifest::collect(&ami::Inputs {
        template: &p.template,
        workdir: &inv.workdir,
        variables: &hashed,
        agent_binary: p.agent_binary.as_deref(),
        app_release: app,
        base_ami: base.as_deref(),
        package_indexes: &indexes,
    })?;
    Ok(Prepared {
        region,
        own,
        version,
        inv,
        base,
        manifest,
        local,
    })
}

/// What `bake build` would start from, without building: the inputs hash and the AMI of the bake
/// cache that `build` would reuse (`None` with `--force`, or when no AMI has that hash yet).
/// Reads only ([`prepare`], DescribeImages).
pub async fn cached(
    aws: &Aws,
    settings: &Settings,
    opts: &BuildOptions,
) -> anyhow::Result<(String, Option<aws_sdk_ec2::types::Image>)> {
    let progress = Progress::spinner("plan");
    let prepared = prepare(aws, settings, opts, &progress).await?;
    let hash = prepared.manifest.hash();
    if opts.force {
        return Ok((hash, None));
    }
    progress.step("looking for an AMI with the same inputs");
    let image = ami::find_cached(&aws.ec2, &hash)
        .await?
        .filter(|img| !prepared.local || local_image::reusable(img));
    progress.finish();
    Ok((hash, image))
}

/// Builds (or reuses) the AMI.
pub async fn build(
    aws: &Aws,
    settings: &Settings,
    opts: &BuildOptions,
) -> anyhow::Result<BuildResult> {
    let started = Instant::now();
    let p = settings.packer()?;
    let progress = Progress::spinner("build");
    let Prepared {
        region,
        own,
        version,
        inv,
        base,
        manifest,
        local,
    } = prepare(aws, settings, opts, &progress).await?;
    let hash = manifest.hash();
    let name = template_name(p);
    if !opts.force {
        progress.step("looking for an AMI with the same inputs");
        if let Some(img) = ami::find_cached(&aws.ec2, &hash)
            .await?
            .filter(|img| !local || local_image::reusable(img))
        {
            let id = img.image_id().unwrap_or_default().to_owned();
            progress.finish();
            tracing::info!(image_id = %id, inputs_hash = %hash, "reusing {id}: it was built from the same inputs (use --force to build anew)");
            return Ok(BuildResult {
                image_id: id,
                region,
                artifacts: Vec::new(),
                reused: true,
                inputs_hash: hash,
                base_ami: base,
                changed_since: None,
                changes: Vec::new(),
                sbom: None,
                sbom_missing: None,
                packer_secs: 0.0,
                total_secs: started.elapsed().as_secs_f64(),
            });
        }
    }
    // Say why the last AMI of this template is not reused.
    let mut changed_since = None;
    let mut changes = Vec::new();
    if let Some(prev) = ami::latest_of_template(&aws.ec2, &name).await? {
        let prev_id = prev.image_id().unwrap_or_default().to_owned();
        match manifest.changes_since(&prev) {
            Some(c) if c.is_empty() => {
                tracing::info!("building anew (--force): the inputs are those of {prev_id}");
            }
            Some(c) => {
                tracing::info!(
                    previous = %prev_id,
                    "inputs changed since {prev_id}: {}",
                    c.join(", ")
                );
                changes = c;
            }
            None => tracing::info!(
                "{prev_id} does not record its inputs (made by an older bake): building anew"
            ),
        }
        changed_since = Some(prev_id);
    }
    let workdir = inv.workdir.clone();
    let commit = ami::git_commit(&workdir).await;
    let built_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut vars = own;
    vars.insert("bake_inputs_hash".to_owned(), hash.clone());
    vars.insert("bake_git_commit".to_owned(), commit.clone());
    vars.insert(
        "bake_version".to_owned(),
        bake_common::clap_version!().to_owned(),
    );
    vars.insert("bake_built_at".to_owned(), built_at.clone());
    let args = packer::var_args(&inv, &vars, &p.variables);
    tracing::info!(packer = %version, template = %p.template.display(), init = inv.init, "building");
    progress.step(&format!("packer {version} build"));
    let (built, local_rootfs) = if local {
        let l = local_image::build(
            &p.binary,
            &inv,
            &args,
            local_image::ec2_endpoint(&settings.aws).as_deref(),
            &p.work_dir,
            &hash,
            p.timeout,
            &progress,
        )
        .await?;
        (l.built, Some(l.rootfs))
    } else {
        let built = packer::build(&p.binary, &inv, &args, p.timeout, &progress).await?;
        (built, None)
    };
    let packer_elapsed = built.packer_elapsed;
    // The local image's SBOM is a file of its root; an EC2 build's comes framed on Packer's
    // output (nothing after cleanup.sh can fetch a file from the build instance).
    let printed = match &local_rootfs {
        Some(root) => match std::fs::read(root.join(SBOM_IN_IMAGE)) {
            Ok(json) => Some(Ok(json)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(format!("{}: {e}", root.join(SBOM_IN_IMAGE).display()))),
        },
        None => built.sbom.clone(),
    };
    let (_, image_id) = built
        .amis
        .iter()
        .find(|(r, _)| r == &region)
        .or_else(|| built.amis.first())
        .cloned()
        .ok_or(BuildError::NoAmi)?;
    progress.step(&format!("tagging {image_id} and its snapshots"));
    let image = ami::describe(&aws.ec2, &image_id).await?;
    let mut tags = ami::provenance_tags(&hash, &commit, &built_at, settings.app_version.as_deref());
    tags.push((ami::TAG_TEMPLATE.to_owned(), name));
    if let Some(rootfs) = &local_rootfs {
        tags.push((
            local_image::TAG_LOCAL_IMAGE.to_owned(),
            rootfs.display().to_string(),
        ));
    }
    ami::tag_image(&aws.ec2, &image, &tags).await?;
    // What it was built from, on the AMI only (the snapshots keep the provenance).
    ami::tag_image_only(&aws.ec2, &image_id, &manifest.tags()).await?;
    ami::require_imdsv2(&aws.ec2, &image).await?;
    let (sbom, sbom_missing) = match (printed, &settings.sbom) {
        (Some(Ok(json)), Some(s)) => {
            progress.step(&format!("storing the SBOM of {image_id} in s3://{}", s.bucket));
            (Some(crate::sbom::store(aws, s, &image_id, &json).await?), None)
        }
        (Some(Ok(_)), None) => (
            None,
            Some("no [sbom] bucket in bake.toml: the build's SBOM is not stored".to_owned()),
        ),
        (Some(Err(e)), _) => (None, Some(format!("the build printed an unreadable SBOM: {e}"))),
        (None, _) => (
            None,
            Some("the build printed no SBOM (no provisioning ran: communicator none, or a template without cleanup.sh's bake-agent sbom)".to_owned()),
        ),
    };
    if let Some(why) = &sbom_missing {
        tracing::warn!(image_id = %image_id, "no SBOM stored for {image_id}: {why}");
    }
    progress.finish();
    let total = started.elapsed();
    tracing::info!(
        image_id = %image_id,
        packer_ms = u64::try_from(packer_elapsed.as_millis()).unwrap_or(u64::MAX),
        overhead_ms = u64::try_from(total.saturating_sub(packer_elapsed).as_millis()).unwrap_or(u64::MAX),
        "built {image_id}"
    );
    Ok(BuildResult {
        image_id,
        region,
        artifacts: built.amis,
        reused: false,
        inputs_hash: hash,
        base_ami: base,
        changed_since,
        changes,
        sbom,
        sbom_missing,
        packer_secs: packer_elapsed.as_secs_f64(),
        total_secs: total.as_secs_f64(),
    })
}

/// A build's result as text for people: the AMI id, and why it was reused.
#[must_use]
pub fn render(r: &BuildResult) -> String {
    if r.reused {
        format!(
            "{} (reused: same inputs hash {})",
            r.image_id, r.inputs_hash
        )
    } else {
        r.image_id.clone()
    }
}

/// `bake validate`'s Packer part: `packer validate` with the invocation for the installed Packer
/// and placeholder provenance values. No AWS calls.
pub async fn validate(settings: &Settings) -> anyhow::Result<String> {
    let p = settings.packer()?;
    let version = packer::version(&p.binary).await?;
    let inv = packer::invocation(&p.template, version)?;
    let region = settings
        .aws
        .region
        .clone()
        .unwrap_or_else(|| "us-east-1".to_owned());
    let mut vars = own_inputs(settings, p, &region, app_release(settings, None).0);
    for k in [
        "bake_inputs_hash",
        "bake_git_commit",
        "bake_version",
        "bake_built_at",
    ] {
        vars.insert(k.to_owned(), "validate".to_owned());
    }
    let args = packer::var_args(&inv, &vars, &p.variables);
    let fut = packer::validate(&p.binary, &inv, &args);
    match tokio::time::timeout(Duration::from_secs(300), fut).await {
        Ok(r) => r.map_err(BuildError::Validate)?,
        Err(_) => return Err(BuildError::ValidateTimedOut.into()),
    }
    Ok(format!(
        "packer {version}: {} is valid",
        p.template.display()
    ))
}
