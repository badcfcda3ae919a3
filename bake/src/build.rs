//! `bake build`: hash the inputs, reuse a cached AMI or run Packer, tag the result.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use bake_common::aws::Aws;

use crate::ami;
use crate::config::{PackerSettings, Settings};
use crate::exit::{coded, Exit};
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
    /// Seconds Packer ran.
    pub packer_secs: f64,
    /// Seconds the whole build took.
    pub total_secs: f64,
}

/// Maps Packer errors to exit codes.
fn packer_error(e: PackerError) -> anyhow::Error {
    let code = match &e {
        PackerError::Interrupted => Exit::Interrupted,
        PackerError::Template { .. } | PackerError::Spawn { .. } | PackerError::Version { .. } => {
            Exit::Config
        }
        _ => Exit::Build,
    };
    coded(code, e.to_string())
}

/// Bake's own Packer variables (without provenance), the ones that go into the hash.
/// The app release as passed to Packer: a value naming an existing file (relative to the config
/// file's directory for `app.release`, to the current directory for `--app-release`) becomes an
/// absolute path, whose content is then hashed too; anything else (a version, a URL) is as is.
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
    if candidate.is_file() {
        let abs = std::fs::canonicalize(&candidate).unwrap_or(candidate);
        (Some(abs.display().to_string()), Some(abs))
    } else {
        (Some(value.to_owned()), None)
    }
}

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

/// Builds (or reuses) the AMI.
pub async fn build(
    aws: &Aws,
    settings: &Settings,
    opts: &BuildOptions,
) -> anyhow::Result<BuildResult> {
    let started = Instant::now();
    let p = settings.packer()?;
    let region = aws.region.clone().ok_or_else(|| {
        coded(
            Exit::Config,
            "aws.region: no region (set aws.region in bake.toml or AWS_REGION)",
        )
    })?;
    let (release, release_file) = app_release(settings, opts.app_release.as_deref());
    let own = own_inputs(settings, p, &region, release);
    // The hash covers bake's inputs and the user's variables, not the provenance values.
    let mut hashed = own.clone();
    hashed.extend(
        p.variables
            .iter()
            .map(|(k, v)| (format!("user:{k}"), v.clone())),
    );
    let hash = ami::inputs_hash(&ami::Inputs {
        template: &p.template,
        variables: &hashed,
        agent_binary: p.agent_binary.as_deref(),
        app_release_file: release_file.as_deref(),
    })
    .map_err(|e| coded(Exit::Config, e.to_string()))?;
    let progress = Progress::spinner("build");
    if !opts.force {
        progress.step("looking for an AMI with the same inputs");
        if let Some(img) = ami::find_cached(&aws.ec2, &hash)
            .await
            .map_err(|e| coded(Exit::Aws, e.to_string()))?
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
                packer_secs: 0.0,
                total_secs: started.elapsed().as_secs_f64(),
            });
        }
    }
    let version = packer::version(&p.binary).await.map_err(packer_error)?;
    let inv = packer::invocation(&p.template, version).map_err(packer_error)?;
    let workdir = if p.template.is_dir() {
        p.template.clone()
    } else {
        inv.workdir.clone()
    };
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
    let built = packer::build(&p.binary, &inv, &args, p.timeout, &progress)
        .await
        .map_err(packer_error)?;
    let packer_elapsed = built.packer_elapsed;
    let (_, image_id) = built
        .amis
        .iter()
        .find(|(r, _)| r == &region)
        .or_else(|| built.amis.first())
        .cloned()
        .ok_or_else(|| coded(Exit::Build, "packer build finished without an AMI"))?;
    progress.step(&format!("tagging {image_id} and its snapshots"));
    let image = ami::describe(&aws.ec2, &image_id)
        .await
        .map_err(|e| coded(Exit::Aws, e.to_string()))?;
    let tags = ami::provenance_tags(&hash, &commit, &built_at, settings.app_version.as_deref());
    ami::tag_image(&aws.ec2, &image, &tags)
        .await
        .map_err(|e| coded(Exit::Aws, e.to_string()))?;
    ami::require_imdsv2(&aws.ec2, &image)
        .await
        .map_err(|e| coded(Exit::Aws, e.to_string()))?;
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
        packer_secs: packer_elapsed.as_secs_f64(),
        total_secs: total.as_secs_f64(),
    })
}

/// `bake validate`'s Packer part: `packer validate` with the invocation for the installed Packer
/// and placeholder provenance values. No AWS calls.
pub async fn validate(settings: &Settings) -> anyhow::Result<String> {
    let p = settings.packer()?;
    let version = packer::version(&p.binary).await.map_err(packer_error)?;
    let inv = packer::invocation(&p.template, version).map_err(packer_error)?;
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
        Ok(r) => r.map_err(|e| coded(Exit::Config, e.to_string()))?,
        Err(_) => {
            return Err(coded(
                Exit::Config,
                "packer validate did not finish within 5 minutes",
            ))
        }
    }
    Ok(format!(
        "packer {version}: {} is valid",
        p.template.display()
    ))
}
