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
    #[error("{call} ({resource}): {message}")]
    Ec2 {
        /// The API call.
        call: &'static str,
        /// What it was about.
        resource: String,
        /// The SDK error, with its context.
        message: String,
    },
}

fn ec2_err<E: std::error::Error + 'static, R: std::fmt::Debug>(
    call: &'static str,
    resource: impl Into<String>,
) -> impl FnOnce(aws_sdk_ec2::error::SdkError<E, R>) -> AmiError {
    let resource = resource.into();
    move |e| AmiError::Ec2 {
        call,
        resource,
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// Everything that determines an AMI's content.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Template directory or file.
    pub template: &'a Path,
    /// Variables passed to Packer (without the provenance values).
    pub variables: &'a BTreeMap<String, String>,
    /// The agent binary.
    pub agent_binary: Option<&'a Path>,
    /// The app release, when it is a file.
    pub app_release_file: Option<&'a Path>,
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Packer's own state and editor/VCS files are not inputs.
        if name.starts_with('.') || name == "packer_cache" {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            files_under(&path, out)?;
        } else if meta.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// sha256 over the template files and scripts (by relative path, sorted), the variables
/// (sorted by name) and the agent binary, each length-prefixed: lowercase hex.
pub fn inputs_hash(inputs: &Inputs<'_>) -> Result<String, AmiError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AmiError::Input {
            key: "packer.template",
            path,
            source,
        }
    };
    let mut h = Sha256::new();
    let mut field = |tag: &str, bytes: &[u8]| {
        h.update(tag.as_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    let (root, mut files) = if inputs.template.is_dir() {
        let mut files = Vec::new();
        files_under(inputs.template, &mut files).map_err(read_err(inputs.template))?;
        (inputs.template.to_path_buf(), files)
    } else {
        let root = inputs
            .template
            .parent()
            .map_or_else(PathBuf::new, Path::to_path_buf);
        (root, vec![inputs.template.to_path_buf()])
    };
    files.sort();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        field("file", rel.to_string_lossy().as_bytes());
        field("content", &std::fs::read(f).map_err(read_err(f))?);
    }
    for (k, v) in inputs.variables {
        field("var", k.as_bytes());
        field("value", v.as_bytes());
    }
    if let Some(agent) = inputs.agent_binary {
        let bytes = std::fs::read(agent).map_err(|source| AmiError::Input {
            key: "packer.agent_binary",
            path: agent.to_path_buf(),
            source,
        })?;
        field("agent", &bytes);
    }
    if let Some(app) = inputs.app_release_file {
        let bytes = std::fs::read(app).map_err(|source| AmiError::Input {
            key: "app.release",
            path: app.to_path_buf(),
            source,
        })?;
        field("app", &bytes);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
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

/// Describes one AMI.
pub async fn describe(ec2: &aws_sdk_ec2::Client, ami: &str) -> Result<Image, AmiError> {
    let out = ec2
        .describe_images()
        .image_ids(ami)
        .send()
        .await
        .map_err(ec2_err("DescribeImages", ami))?;
    out.images().first().cloned().ok_or_else(|| AmiError::Ec2 {
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

/// What `bake prune` decided for one AMI.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PruneItem {
    /// The AMI.
    pub image_id: String,
    /// Its name.
    pub name: String,
    /// Its creation date.
    pub created: String,
    /// Its snapshots.
    pub snapshots: Vec<String>,
    /// `None`: deleted (or would be, with `--dry-run`); else why it is kept.
    pub kept_because: Option<String>,
}

/// Decides, purely, which of `images` (bake-made) to delete: everything except the newest
/// `keep` and the ones in `in_use` (image id → why).
#[must_use]
pub fn plan_prune(
    images: &[Image],
    keep: usize,
    in_use: &BTreeMap<String, String>,
) -> Vec<PruneItem> {
    let mut sorted: Vec<&Image> = images.iter().collect();
    // Newest first; ISO 8601 strings sort by time.
    sorted.sort_by(|a, b| {
        b.creation_date()
            .cmp(&a.creation_date())
            .then(a.image_id().cmp(&b.image_id()))
    });
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, img)| {
            let id = img.image_id().unwrap_or_default().to_owned();
            let kept_because = if i < keep {
                Some(format!("among the newest {keep}"))
            } else {
                in_use.get(&id).cloned()
            };
            PruneItem {
                image_id: id,
                name: img.name().unwrap_or_default().to_owned(),
                created: img.creation_date().unwrap_or_default().to_owned(),
                snapshots: snapshots(img),
                kept_because,
            }
        })
        .collect()
}

/// Every bake-made AMI of this account (tagged `bake:inputs-hash`).
pub async fn list_baked(ec2: &aws_sdk_ec2::Client) -> Result<Vec<Image>, AmiError> {
    let out = ec2
        .describe_images()
        .owners("self")
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

/// Deregisters `image` and deletes its snapshots.
pub async fn delete(ec2: &aws_sdk_ec2::Client, item: &PruneItem) -> Result<(), AmiError> {
    ec2.deregister_image()
        .image_id(&item.image_id)
        .send()
        .await
        .map_err(ec2_err("DeregisterImage", item.image_id.clone()))?;
    for s in &item.snapshots {
        ec2.delete_snapshot()
            .snapshot_id(s)
            .send()
            .await
            .map_err(ec2_err("DeleteSnapshot", s.clone()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(id: &str, date: &str) -> Image {
        Image::builder()
            .image_id(id)
            .creation_date(date)
            .name(id)
            .build()
    }

    #[test]
    fn test_plan_prune_keeps_newest_and_in_use() {
        let images = vec![
            img("ami-1", "2026-01-01T00:00:00.000Z"),
            img("ami-3", "2026-03-01T00:00:00.000Z"),
            img("ami-2", "2026-02-01T00:00:00.000Z"),
            img("ami-0", "2025-12-01T00:00:00.000Z"),
        ];
        let in_use = BTreeMap::from([("ami-0".to_owned(), "launch template default".to_owned())]);
        let plan = plan_prune(&images, 1, &in_use);
        let deleted: Vec<_> = plan
            .iter()
            .filter(|p| p.kept_because.is_none())
            .map(|p| p.image_id.as_str())
            .collect();
        assert_eq!(deleted, vec!["ami-2", "ami-1"]);
        assert_eq!(plan[0].image_id, "ami-3");
        assert!(plan
            .iter()
            .any(|p| p.image_id == "ami-0" && p.kept_because.is_some()));
    }

    #[test]
    fn test_inputs_hash_is_deterministic_and_sensitive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.pkr.hcl"), "a").unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        std::fs::write(dir.path().join("scripts/x.sh"), "x").unwrap();
        std::fs::create_dir(dir.path().join("packer_cache")).unwrap();
        std::fs::write(dir.path().join("packer_cache/junk"), "1").unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, "bin").unwrap();
        let vars = BTreeMap::from([("app_release".to_owned(), "1".to_owned())]);
        let inputs = Inputs {
            template: dir.path(),
            variables: &vars,
            agent_binary: Some(&agent),
            app_release_file: None,
        };
        let h1 = inputs_hash(&inputs).unwrap();
        assert_eq!(h1.len(), 64);
        assert_eq!(h1, inputs_hash(&inputs).unwrap());
        std::fs::write(dir.path().join("packer_cache/junk"), "2").unwrap();
        assert_eq!(
            h1,
            inputs_hash(&inputs).unwrap(),
            "packer_cache is not an input"
        );
        std::fs::write(dir.path().join("scripts/x.sh"), "y").unwrap();
        let h2 = inputs_hash(&inputs).unwrap();
        assert_ne!(h1, h2);
        std::fs::write(&agent, "bin2").unwrap();
        assert_ne!(h2, inputs_hash(&inputs).unwrap());
        let vars2 = BTreeMap::from([("app_release".to_owned(), "2".to_owned())]);
        let inputs2 = Inputs {
            template: dir.path(),
            variables: &vars2,
            agent_binary: Some(&agent),
            app_release_file: None,
        };
        assert_ne!(
            inputs_hash(&inputs).unwrap(),
            inputs_hash(&inputs2).unwrap()
        );
        let e = inputs_hash(&Inputs {
            template: dir.path(),
            variables: &vars,
            agent_binary: Some(&dir.path().join("nope")),
            app_release_file: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("packer.agent_binary: "), "{e}");
    }
}
