//! The local target (`[packer] target = "local"`): the image is a Debian root file system in a
//! directory, made by the template's `null.local` source (debootstrap, then the same uploads and
//! provisioning scripts as the EC2 build, see `packer/scripts/local-root.sh`), and the AMI
//! registered in the emulator for it is the template's `amazon-ebs` source with communicator
//! none, tagged [`TAG_LOCAL_IMAGE`] with the root file system's absolute path.
//!
//! Layout of the work dir (`[packer] work_dir`, default `.work` next to bake.toml):
//! - `images/<inputs hash>/rootfs`: a finished image, never written again after its build;
//!   `images/<inputs hash>/image.json` records what it was built from. A build writes into a
//!   temporary `images/.build-<hash>-*` directory, renamed to `images/<inputs hash>` only when
//!   every step succeeded, and removed otherwise; a lock file `images/<inputs hash>.lock` makes
//!   concurrent builds of the same inputs wait for each other (the second reuses the first's).
//! - `debootstrap/`: the Debian base, cached by suite, architecture, package list and mirror
//!   (see `local-root.sh`).
//!
//! An image with the same inputs hash is reused even when the AMI record is not (a fresh
//! emulator): the image build is skipped and only the record is registered.

use std::path::{Path, PathBuf};

use aws_sdk_ec2::types::Image;

use crate::output::Progress;
use crate::packer::{self, Built, Invocation, PackerError};

/// Tag on an AMI of the local target: the absolute path of its root file system directory.
pub const TAG_LOCAL_IMAGE: &str = "bake:local-image";

/// The template's source that builds the local image.
pub const LOCAL_SOURCE: &str = "null.local";

/// Template variables bake sets for the local target.
pub const VARIABLES: &[&str] = &["local_root", "local_cache_dir"];

/// What `bake build` makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// An AMI (the template's sources other than `null.local`).
    #[default]
    Ami,
    /// A local root file system and an AMI record for it (the emulator).
    Local,
}

impl Target {
    /// `packer.target`'s values.
    pub const NAMES: &'static str = "\"ami\" or \"local\"";

    /// Parses `packer.target`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ami" => Some(Self::Ami),
            "local" => Some(Self::Local),
            _ => None,
        }
    }
}

/// Where the image of `inputs_hash` lives under `work_dir`.
#[must_use]
pub fn image_dir(work_dir: &Path, inputs_hash: &str) -> PathBuf {
    work_dir.join("images").join(inputs_hash)
}

/// Whether a cached AMI can be reused for the local target: its image directory still exists.
#[must_use]
pub fn reusable(image: &Image) -> bool {
    crate::ami::tag(image, TAG_LOCAL_IMAGE).is_some_and(|p| Path::new(p).is_dir())
}

/// The EC2 endpoint override bake's own clients use, in the SDK's order: `aws.endpoint_url`,
/// then `AWS_ENDPOINT_URL_EC2`, then `AWS_ENDPOINT_URL` (empty = unset).
#[must_use]
pub fn ec2_endpoint(aws: &bake_common::aws::AwsSettings) -> Option<String> {
    aws.endpoint_url.clone().or_else(|| {
        ["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"]
            .into_iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    })
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PackerError {
    let what = what.into();
    move |source| PackerError::Io { what, source }
}

/// A finished local build.
#[derive(Debug)]
pub struct LocalBuilt {
    /// The AMI record's build.
    pub built: Built,
    /// The image's root file system (absolute).
    pub rootfs: PathBuf,
    /// The image was made by this build (false: an image with the same inputs was reused).
    pub made: bool,
}

/// The variables of the AMI record's build, after the user's (the last `-var` wins): no
/// machine to provision, the EC2 endpoint bake itself talks to (the emulator), and no checks of
/// credentials, region or instance metadata, which an emulator does not pass. Only those the
/// template declares.
fn record_vars(inv: &Invocation, ec2_endpoint: &str) -> Vec<String> {
    [
        ("communicator", "none"),
        ("custom_endpoint_ec2", ec2_endpoint),
        ("skip_credential_validation", "true"),
        ("skip_region_validation", "true"),
        ("skip_metadata_api_check", "true"),
    ]
    .into_iter()
    .filter(|(k, _)| inv.declared.iter().any(|d| d == k))
    .flat_map(|(k, v)| ["-var".to_owned(), format!("{k}={v}")])
    .collect()
}

/// Builds the image of `inputs_hash` under `work_dir` unless it exists, then registers its AMI
/// record at `ec2_endpoint` (the emulator: the local target needs one, or the record would be an
/// empty AMI on AWS). `vars` are the build's `-var` arguments; the endpoint and the variables
/// of [`record_vars`] are not part of the inputs hash, so one image serves every emulator.
#[allow(clippy::too_many_arguments)]
pub async fn build(
    binary: &Path,
    inv: &Invocation,
    vars: &[String],
    ec2_endpoint: Option<&str>,
    work_dir: &Path,
    inputs_hash: &str,
    timeout: Option<std::time::Duration>,
    progress: &Progress,
) -> Result<LocalBuilt, PackerError> {
    let Some(ec2_endpoint) = ec2_endpoint else {
        return Err(PackerError::Template {
            path: inv.workdir.clone(),
            message: "packer.target = \"local\" registers its AMI record in an emulator: set aws.endpoint_url or AWS_ENDPOINT_URL".into(),
        });
    };
    let images = work_dir.join("images");
    std::fs::create_dir_all(&images).map_err(io(format!("creating '{}'", images.display())))?;
    let images =
        std::fs::canonicalize(&images).map_err(io(format!("resolving '{}'", images.display())))?;
    let cache = work_dir.join("debootstrap");
    std::fs::create_dir_all(&cache).map_err(io(format!("creating '{}'", cache.display())))?;
    let cache =
        std::fs::canonicalize(&cache).map_err(io(format!("resolving '{}'", cache.display())))?;
    let dir = images.join(inputs_hash);
    let rootfs = dir.join("rootfs");

    // One build per inputs hash at a time; whoever comes second reuses the first's image.
    let lock_path = images.join(format!("{inputs_hash}.lock"));
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(format!("opening '{}'", lock_path.display())))?;
    let _lock = tokio::task::spawn_blocking(move || {
        nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| std::io::Error::from(e))
    })
    .await
    .map_err(|e| PackerError::Io {
        what: "waiting for the image lock".into(),
        source: std::io::Error::other(e),
    })?
    .map_err(io(format!("locking '{}'", lock_path.display())))?;

    let mut image_elapsed = std::time::Duration::ZERO;
    let made = if dir.is_dir() {
        progress.step(&format!("reusing the local image {}", rootfs.display()));
        tracing::info!(image = %rootfs.display(), "reusing the local image built from the same inputs");
        false
    } else {
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".build-{inputs_hash}-"))
            .tempdir_in(&images)
            .map_err(io("creating the image's build directory"))?;
        let mut args = vars.to_vec();
        args.push(format!("-only={LOCAL_SOURCE}"));
        args.push("-var".into());
        args.push(format!(
            "local_root={}",
            tmp.path().join("rootfs").display()
        ));
        args.push("-var".into());
        args.push(format!("local_cache_dir={}", cache.display()));
        progress
            .step("building the local image (debootstrap, install-app.sh, harden.sh, cleanup.sh)");
        let started = std::time::Instant::now();
        let built = packer::build(binary, inv, &args, timeout, progress).await;
        match built {
            Ok(_) | Err(PackerError::NoArtifact) => {}
            Err(e) => return Err(e),
        }
        if !tmp.path().join("rootfs/usr/local/bin/bake-agent").is_file() {
            return Err(PackerError::Failed {
                command: "build",
                status: "finished".into(),
                message: format!(
                    "{LOCAL_SOURCE} made no image (no /usr/local/bin/bake-agent in {}): does the template run the local target's steps?",
                    tmp.path().join("rootfs").display()
                ),
            });
        }
        let record = serde_json::json!({
            "inputs_hash": inputs_hash,
            "built_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "build_secs": started.elapsed().as_secs_f64(),
        });
        std::fs::write(tmp.path().join("image.json"), format!("{record:#}\n"))
            .map_err(io("writing image.json"))?;
        let path = tmp.keep();
        if let Err(e) = std::fs::rename(&path, &dir) {
            // Left as it is, it would look like neither a finished image nor a build in progress.
            let _ = std::fs::remove_dir_all(&path);
            return Err(io(format!("renaming the image to '{}'", dir.display()))(e));
        }
        image_elapsed = started.elapsed();
        tracing::info!(image = %rootfs.display(), secs = image_elapsed.as_secs(), "local image built");
        true
    };

    // The AMI record: the other sources, with nothing to provision.
    let mut args = vars.to_vec();
    args.push(format!("-except={LOCAL_SOURCE}"));
    args.extend(record_vars(inv, ec2_endpoint));
    progress.step("registering the local image's AMI");
    let mut built = packer::build(binary, inv, &args, timeout, progress).await?;
    // Packer's time: both builds.
    built.packer_elapsed += image_elapsed;
    Ok(LocalBuilt {
        built,
        rootfs,
        made,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_target_parse() {
        assert_eq!(Target::parse("ami"), Some(Target::Ami));
        assert_eq!(Target::parse("local"), Some(Target::Local));
        assert_eq!(Target::parse("Local"), None);
        assert_eq!(Target::default(), Target::Ami);
    }

    #[test]
    fn test_image_dir_is_keyed_by_hash() {
        assert_eq!(
            image_dir(Path::new("/w/.work"), "abc"),
            PathBuf::from("/w/.work/images/abc")
        );
    }
}
