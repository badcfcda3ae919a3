//! `bake promote AMI --to REGION[,REGION…]`: a bake-made image, as released to one stage, made
//! available to the next in other regions and accounts.
//!
//! For each destination region other than the source's, the image is copied there (CopyImage,
//! requested in the destination region, `Encrypted` with `--kms-key` / `promote.kms_key`, else
//! that region's default EBS key; the source's name and description), tagged at creation (its
//! `TagSpecifications`, the image and its snapshots) with every `bake:*` tag of the source
//! ([`carried_tags`]) plus [`TAG_PROMOTED_FROM`] = `<source-region>/<source-ami>` and
//! [`TAG_PROMOTED_STAGE`] = the stage the source was released to. So a copy is never untagged:
//! one that a failure left behind (not yet available, not shared) is found again by its
//! `bake:promoted-from` tag, and a second `bake promote` of the same image takes it up instead of
//! copying again. bake waits until the copy is `available` (at most `promote.timeout`), tags it
//! and its snapshots once more (CreateTags: the snapshots of a copy exist only then, and a copy
//! taken up gets the source's tags of now), and checks that its `bake:inputs-hash` is the
//! source's. The source region itself, when listed, gets no copy: the source is shared.
//!
//! Every resulting image is shared with each `--account`: its launch permission
//! (ModifyImageAttribute) and its snapshots' create-volume permission (ModifySnapshotAttribute).
//! EBS refuses to share a snapshot encrypted with the default key ("Snapshots encrypted with your
//! default KMS key cannot be shared with other accounts", ModifySnapshotAttribute), so `--account`
//! with copies on the default key is refused before anything is copied.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    CreateVolumePermission, CreateVolumePermissionModifications, Filter, Image, ImageState,
    LaunchPermission, LaunchPermissionModifications, ResourceType, SnapshotAttributeName, Tag,
    TagSpecification,
};
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::ami::{self, TAG_INPUTS_HASH};
use crate::aws::Aws;
use crate::config::Settings;

/// Tag of a promoted copy: `<source-region>/<source-ami>`. Also how a second promotion finds the
/// copy in the destination region.
pub const TAG_PROMOTED_FROM: &str = "bake:promoted-from";
/// Tag of a promoted copy: the stage its source was released to (`--from-stage`, else
/// `release.stage`); `release.require_promoted_from` checks it.
pub const TAG_PROMOTED_STAGE: &str = "bake:promoted-stage";
/// Source tags a copy does not take: they record `bake prune`'s stages of the source in its own
/// region, not anything about the image's content.
const NOT_CARRIED: [&str; 4] = [
    ami::TAG_DEPRECATED_AT,
    ami::TAG_DISABLED_AT,
    TAG_PROMOTED_FROM,
    TAG_PROMOTED_STAGE,
];
/// First wait between two looks at a copy; ×1.5 per look up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_secs(2);
/// Longest wait between two looks at a copy (AWS copies take minutes).
const MAX_POLL: Duration = Duration::from_secs(15);

/// Errors of a promotion.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The source has no `bake:inputs-hash`: bake did not make it.
    #[error("{ami} in {region} has no {TAG_INPUTS_HASH} tag: it was not made by bake, and bake promotes only its own images")]
    NotBakeMade {
        /// The source image.
        ami: String,
        /// Its region.
        region: String,
    },
    /// The source is not `available` (pending, disabled, failed).
    #[error("{ami} in {region} is {state}, not available: nothing to promote yet")]
    SourceNotAvailable {
        /// The source image.
        ami: String,
        /// Its region.
        region: String,
        /// Its state.
        state: String,
    },
    /// No stage to record.
    #[error("no stage to record as {TAG_PROMOTED_STAGE}: give --from-stage NAME or set release.stage in {file} (the stage the image was released to)")]
    NoStage {
        /// bake.toml.
        file: String,
    },
    /// `--account` with copies on the default EBS key.
    #[error("--account: a copy encrypted with a region's default EBS key (aws/ebs) cannot be shared with other accounts (\"Snapshots encrypted with your default KMS key cannot be shared\"); give --kms-key or promote.kms_key: a customer managed key whose key policy lets {accounts} use it")]
    DefaultKeyNotShareable {
        /// The accounts asked for.
        accounts: String,
    },
    /// The KMS key cannot encrypt a copy in a destination region.
    #[error("{source_of_key} {key}: {message}")]
    KmsKey {
        /// `--kms-key` or `promote.kms_key`.
        source_of_key: &'static str,
        /// The key as given.
        key: String,
        /// Why.
        message: String,
    },
    /// A copy's inputs hash is not the source's.
    #[error("{copy} in {region} (tagged {TAG_PROMOTED_FROM}={from}) has {TAG_INPUTS_HASH} {}, not the source's {expected}: refusing it as a promotion of the source; see what changed it, deregister it (`aws ec2 deregister-image --region {region} --image-id {copy}`) and promote again", .found.as_deref().unwrap_or("none"))]
    HashMismatch {
        /// The destination region.
        region: String,
        /// The copy.
        copy: String,
        /// `<source-region>/<source-ami>`.
        from: String,
        /// The source's inputs hash.
        expected: String,
        /// The copy's.
        found: Option<String>,
    },
    /// The copy did not become available in time; AWS goes on copying.
    #[error("{copy} in {region} is still {state} after {waited} (promote.timeout / --timeout): AWS goes on copying it; run the same `bake promote` again to take it up (it is tagged {TAG_PROMOTED_FROM}={from})")]
    TimedOut {
        /// The destination region.
        region: String,
        /// The copy.
        copy: String,
        /// `<source-region>/<source-ami>`.
        from: String,
        /// Its last state.
        state: String,
        /// How long bake waited.
        waited: String,
    },
    /// The copy ended `failed` (or `error`, or went away).
    #[error("{copy} in {region} ended {state}{}: deregister it (`aws ec2 deregister-image --region {region} --image-id {copy}`) and promote again", .reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    CopyFailed {
        /// The destination region.
        region: String,
        /// The copy.
        copy: String,
        /// Its state.
        state: String,
        /// AWS's `StateReason`.
        reason: Option<String>,
    },
    /// Interrupted while waiting for a copy; AWS goes on copying.
    #[error("interrupted while waiting for {copy} in {region}: AWS goes on copying it; run the same `bake promote` again to take it up")]
    Interrupted {
        /// The destination region.
        region: String,
        /// The copy.
        copy: String,
    },
    /// An EC2 call failed.
    #[error("{call} in {region} ({resource}): {message}")]
    Call {
        /// The API call.
        call: &'static str,
        /// The region it was made in.
        region: String,
        /// What it was about.
        resource: String,
        /// The SDK's error with its context.
        message: String,
    },
}

fn call_err<E: std::error::Error + 'static>(
    call: &'static str,
    region: &str,
    resource: impl Into<String>,
) -> impl FnOnce(E) -> PromoteError {
    let (region, resource) = (region.to_owned(), resource.into());
    move |e| PromoteError::Call {
        call,
        region,
        resource,
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// `bake promote` options.
#[derive(Clone, Debug, Default)]
pub struct PromoteOptions {
    /// The source image, in the command's region.
    pub ami: String,
    /// Destination regions (`--to`), in the order given.
    pub to: Vec<String>,
    /// Accounts to share every resulting image with (`--account`).
    pub accounts: Vec<String>,
    /// `--kms-key` (wins over `promote.kms_key`).
    pub kms_key: Option<String>,
    /// `--from-stage` (wins over `release.stage`).
    pub from_stage: Option<String>,
    /// `--timeout` (wins over `promote.timeout`).
    pub timeout: Option<Duration>,
}

/// One destination region's image, as printed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Promoted {
    /// The destination region.
    pub region: String,
    /// The copy there (the source itself in the source's region).
    pub image_id: String,
    /// Copied by this run (false: a copy of an earlier run taken up, or the source itself).
    pub new: bool,
    /// The source itself (its region was among the destinations): shared, not copied.
    pub source: bool,
    /// Its snapshots.
    pub snapshots: Vec<String>,
    /// Whether its snapshots are encrypted, as DescribeImages says.
    pub encrypted: bool,
    /// Their KMS key, as DescribeImages says.
    pub kms_key_id: Option<String>,
    /// The accounts it is shared with (launch permission and create-volume permission).
    pub shared_with: Vec<String>,
    /// Its `bake:inputs-hash`, checked to be the source's.
    pub inputs_hash: String,
}

/// A promotion's result (`--output json`: this document).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PromoteReport {
    /// The source image.
    pub source_image_id: String,
    /// Its region.
    pub source_region: String,
    /// `bake:promoted-from` of every copy.
    pub promoted_from: String,
    /// `bake:promoted-stage` of every copy.
    pub stage: String,
    /// The source's `bake:inputs-hash`.
    pub inputs_hash: String,
    /// Each destination region, in the order given.
    pub regions: Vec<Promoted>,
}

/// The key to encrypt the copy in `region` with, of `key` as given, for `copies` regions in
/// all. A KMS key belongs to one region: an ARN must name `region`, except a multi-Region key
/// (`mrk-…`), whose replica in `region` has the same id; a bare key id can serve one region only.
/// An alias is looked up in each region.
pub fn kms_key_for(key: &str, region: &str, copies: usize) -> Result<String, String> {
    let elsewhere = |r: &str| {
        format!("a key of {r} cannot encrypt a copy in {region}: give an alias (alias/NAME) that exists in every destination region, or a multi-Region key (mrk-…)")
    };
    if let Some(rest) = key.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, _, key_region, account, resource] = parts[..] else {
            return Err(crate::config::check_kms_key(key).err().unwrap_or_default());
        };
        if key_region == region {
            return Ok(key.to_owned());
        }
        if resource.starts_with("key/mrk-") {
            return Ok(format!("arn:{partition}:kms:{region}:{account}:{resource}"));
        }
        return Err(elsewhere(key_region));
    }
    if key.starts_with("alias/") || key.starts_with("mrk-") || copies <= 1 {
        return Ok(key.to_owned());
    }
    Err(elsewhere("one region"))
}

/// The tags of a copy of `source`: its `bake:*` tags (provenance, inputs, boot test) but
/// [`NOT_CARRIED`], then `bake:promoted-from` = `from` and `bake:promoted-stage` = `stage`.
#[must_use]
pub fn carried_tags(source: &Image, from: &str, stage: &str) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = source
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value().unwrap_or_default())))
        .filter(|(k, _)| k.starts_with("bake:") && !NOT_CARRIED.contains(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    tags.sort();
    tags.push((TAG_PROMOTED_FROM.to_owned(), from.to_owned()));
    tags.push((TAG_PROMOTED_STAGE.to_owned(), stage.to_owned()));
    tags
}

/// Why `image` is not promoted from `required` (`release.require_promoted_from`), or `None`
/// when it is: the sentence after its id.
#[must_use]
pub fn not_promoted_from(image: &Image, required: &str) -> Option<String> {
    match ami::tag(image, TAG_PROMOTED_STAGE) {
        Some(s) if s == required => None,
        Some(s) => Some(format!(
            "was promoted from stage {s:?}, not {required:?} ({TAG_PROMOTED_STAGE}={s}{})",
            ami::tag(image, TAG_PROMOTED_FROM)
                .map(|f| format!(", {TAG_PROMOTED_FROM}={f}"))
                .unwrap_or_default()
        )),
        None => Some(format!(
            "was never promoted (no {TAG_PROMOTED_STAGE} tag), and only images promoted from {required:?} are released here"
        )),
    }
}

fn state_of(image: &Image) -> String {
    image
        .state()
        .map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned())
}

fn tags(pairs: &[(String, String)]) -> Vec<Tag> {
    pairs
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Promotes `opts.ami` from the command's region: see the module's comment. Regions are done one
/// after another, in the order given; a failure stops there, and the error says what each region
/// done before holds and what the failed one holds.
///
/// # Errors
/// No stage, a key that cannot serve, `--account` on the default key (before any change); the
/// source is not bake's or not available; an EC2 call failed; a copy failed, did not become
/// available in time, or has another inputs hash; interrupted.
pub async fn promote(
    aws: &Aws,
    settings: &Settings,
    opts: &PromoteOptions,
) -> anyhow::Result<PromoteReport> {
    let source_region = aws.region.clone().ok_or_else(|| {
        bake_common::exit::Coded::new(crate::exit::Exit::Aws, crate::exit::NO_REGION)
    })?;
    let stage = opts
        .from_stage
        .clone()
        .or_else(|| settings.release.stage.clone())
        .ok_or_else(|| PromoteError::NoStage {
            file: settings.path.display().to_string(),
        })?;
    let mut regions: Vec<String> = Vec::new();
    for r in &opts.to {
        if !regions.contains(r) {
            regions.push(r.clone());
        }
    }
    let mut accounts: Vec<String> = Vec::new();
    for a in &opts.accounts {
        if !accounts.contains(a) {
            accounts.push(a.clone());
        }
    }
    let copies = regions.iter().filter(|r| **r != source_region).count();
    let (key, source_of_key) = match (&opts.kms_key, &settings.promote.kms_key) {
        (Some(k), _) => (Some(k.clone()), "--kms-key"),
        (None, Some(k)) => (Some(k.clone()), "promote.kms_key"),
        (None, None) => (None, "--kms-key"),
    };
    // Every key is checked before anything is copied.
    let mut keys = std::collections::BTreeMap::new();
    for r in regions.iter().filter(|r| **r != source_region) {
        if let Some(k) = &key {
            let k = kms_key_for(k, r, copies).map_err(|message| PromoteError::KmsKey {
                source_of_key,
                key: k.clone(),
                message,
            })?;
            keys.insert(r.clone(), k);
        }
    }
    if key.is_none() && copies > 0 && !accounts.is_empty() {
        return Err(PromoteError::DefaultKeyNotShareable {
            accounts: accounts.join(", "),
        }
        .into());
    }
    let timeout = opts.timeout.unwrap_or(settings.promote.timeout);

    let source = ami::describe(&aws.ec2, &opts.ami).await?;
    let Some(hash) = ami::tag(&source, TAG_INPUTS_HASH).map(str::to_owned) else {
        return Err(PromoteError::NotBakeMade {
            ami: opts.ami.clone(),
            region: source_region,
        }
        .into());
    };
    if source.state() != Some(&ImageState::Available) {
        return Err(PromoteError::SourceNotAvailable {
            ami: opts.ami.clone(),
            region: source_region,
            state: state_of(&source),
        }
        .into());
    }
    let from = format!("{source_region}/{}", opts.ami);
    let carried = carried_tags(&source, &from, &stage);
    let mut report = PromoteReport {
        source_image_id: opts.ami.clone(),
        source_region: source_region.clone(),
        promoted_from: from.clone(),
        stage,
        inputs_hash: hash.clone(),
        regions: Vec::new(),
    };
    for region in &regions {
        let done = if *region == source_region {
            share_source(aws, &source, &source_region, &accounts, &hash).await
        } else {
            let copy = Copy {
                ec2: aws.ec2_in(region),
                region,
                source: &source,
                from: &from,
                tags: &carried,
                kms_key: keys.get(region).map(String::as_str),
                timeout,
            };
            copy.run(&accounts, &hash).await
        };
        match done {
            Ok(p) => {
                tracing::info!(
                    region = %p.region,
                    image_id = %p.image_id,
                    "{} in {}{}",
                    p.image_id,
                    p.region,
                    if p.source {
                        " (the source)"
                    } else if p.new {
                        ": copied"
                    } else {
                        ": copied before, taken up"
                    }
                );
                report.regions.push(p);
            }
            Err((e, holds)) => {
                let before: Vec<String> = report
                    .regions
                    .iter()
                    .map(|p| format!("{} {} ({})", p.region, p.image_id, done_word(p)))
                    .collect();
                let before = if before.is_empty() {
                    "no region before it".to_owned()
                } else {
                    format!("done before: {}", before.join(", "))
                };
                return Err(anyhow::Error::new(e).context(format!(
                    "promoting {} to {region} failed; {region} holds {holds}; {before}",
                    opts.ami
                )));
            }
        }
    }
    Ok(report)
}

fn done_word(p: &Promoted) -> &'static str {
    match (p.source, p.new) {
        (true, _) => "the source, shared",
        (false, true) => "copied",
        (false, false) => "taken up",
    }
}

/// The source region among the destinations: the source itself, shared.
async fn share_source(
    aws: &Aws,
    source: &Image,
    region: &str,
    accounts: &[String],
    hash: &str,
) -> Result<Promoted, (PromoteError, String)> {
    let ami = source.image_id().unwrap_or_default().to_owned();
    share(&aws.ec2, region, source, accounts)
        .await
        .map_err(|e| {
            (
                e,
                format!("the source {ami}, shared with none or some of the accounts"),
            )
        })?;
    Ok(promoted(region, source, false, true, accounts, hash))
}

fn promoted(
    region: &str,
    image: &Image,
    new: bool,
    source: bool,
    accounts: &[String],
    hash: &str,
) -> Promoted {
    let ebs = image
        .block_device_mappings()
        .iter()
        .find_map(|m| m.ebs().filter(|e| e.snapshot_id().is_some()));
    Promoted {
        region: region.to_owned(),
        image_id: image.image_id().unwrap_or_default().to_owned(),
        new,
        source,
        snapshots: ami::snapshots(image),
        encrypted: ebs.and_then(|e| e.encrypted()).unwrap_or(false),
        kms_key_id: ebs.and_then(|e| e.kms_key_id()).map(str::to_owned),
        shared_with: accounts.to_vec(),
        inputs_hash: hash.to_owned(),
    }
}

/// Launch permission on `image` and create-volume permission on its snapshots for `accounts`
/// (both idempotent in EC2).
async fn share(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    image: &Image,
    accounts: &[String],
) -> Result<(), PromoteError> {
    if accounts.is_empty() {
        return Ok(());
    }
    let ami = image.image_id().unwrap_or_default();
    let mut launch = LaunchPermissionModifications::builder();
    let mut volume = CreateVolumePermissionModifications::builder();
    for a in accounts {
        launch = launch.add(LaunchPermission::builder().user_id(a).build());
        volume = volume.add(CreateVolumePermission::builder().user_id(a).build());
    }
    ec2.modify_image_attribute()
        .image_id(ami)
        .launch_permission(launch.build())
        .send()
        .await
        .map_err(call_err("ModifyImageAttribute", region, ami))?;
    let volume = volume.build();
    for s in ami::snapshots(image) {
        ec2.modify_snapshot_attribute()
            .snapshot_id(&s)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .create_volume_permission(volume.clone())
            .send()
            .await
            .map_err(call_err("ModifySnapshotAttribute", region, &s))?;
    }
    tracing::info!(
        "{ami} in {region} and its snapshots shared with {}",
        accounts.join(", ")
    );
    Ok(())
}

/// One destination region's copy.
struct Copy<'a> {
    ec2: aws_sdk_ec2::Client,
    region: &'a str,
    source: &'a Image,
    from: &'a str,
    tags: &'a [(String, String)],
    kms_key: Option<&'a str>,
    timeout: Duration,
}

impl Copy<'_> {
    /// Finds or makes the copy, waits for it, tags, verifies and shares it. An error comes with
    /// what the region holds.
    async fn run(
        &self,
        accounts: &[String],
        hash: &str,
    ) -> Result<Promoted, (PromoteError, String)> {
        let region = self.region;
        let existing = self
            .existing()
            .await
            .map_err(|e| (e, "no copy made by this run".to_owned()))?;
        let (id, new) = match existing {
            Some(id) => {
                tracing::info!(
                    "{id} in {region} is tagged {TAG_PROMOTED_FROM}={}: taken up, not copied again",
                    self.from
                );
                (id, false)
            }
            None => (
                self.copy()
                    .await
                    .map_err(|e| (e, "no copy made by this run".to_owned()))?,
                true,
            ),
        };
        let holds = format!(
            "{} {id}, tagged {TAG_PROMOTED_FROM}={} (a second `bake promote` takes it up)",
            if new { "the new copy" } else { "the copy" },
            self.from
        );
        let with_holds = |e| (e, holds.clone());
        let image = self.wait(&id).await.map_err(with_holds)?;
        self.tag(&image).await.map_err(with_holds)?;
        let image = self.describe(&id).await.map_err(with_holds)?;
        let found = ami::tag(&image, TAG_INPUTS_HASH);
        if found != Some(hash) {
            return Err(with_holds(PromoteError::HashMismatch {
                region: region.to_owned(),
                copy: id.clone(),
                from: self.from.to_owned(),
                expected: hash.to_owned(),
                found: found.map(str::to_owned),
            }));
        }
        share(&self.ec2, region, &image, accounts)
            .await
            .map_err(with_holds)?;
        Ok(promoted(region, &image, new, false, accounts, hash))
    }

    /// A copy of an earlier run: tagged `bake:promoted-from`, not failed (newest first).
    async fn existing(&self) -> Result<Option<String>, PromoteError> {
        let out = self
            .ec2
            .describe_images()
            .owners("self")
            .include_deprecated(true)
            .filters(
                Filter::builder()
                    .name(format!("tag:{TAG_PROMOTED_FROM}"))
                    .values(self.from)
                    .build(),
            )
            .send()
            .await
            .map_err(call_err(
                "DescribeImages",
                self.region,
                format!("{TAG_PROMOTED_FROM}={}", self.from),
            ))?;
        let mut images: Vec<&Image> = out
            .images()
            .iter()
            .filter(|i| ami::tag(i, TAG_PROMOTED_FROM) == Some(self.from))
            .filter(|i| {
                matches!(
                    i.state(),
                    Some(ImageState::Available | ImageState::Pending | ImageState::Transient)
                )
            })
            .collect();
        images.sort_by(|a, b| b.creation_date().cmp(&a.creation_date()));
        Ok(images.first().and_then(|i| i.image_id()).map(str::to_owned))
    }

    /// CopyImage, requested in the destination region, tagged at creation. The SDK fills in the
    /// idempotency token (`ClientToken`) once per call, so its retries make no second copy.
    async fn copy(&self) -> Result<String, PromoteError> {
        let ami = self.source.image_id().unwrap_or_default();
        let source_region = self.from.split_once('/').map_or(self.from, |(r, _)| r);
        let spec = |kind| {
            TagSpecification::builder()
                .resource_type(kind)
                .set_tags(Some(tags(self.tags)))
                .build()
        };
        let out = self
            .ec2
            .copy_image()
            .source_image_id(ami)
            .source_region(source_region)
            .name(self.source.name().unwrap_or(ami))
            .set_description(self.source.description().map(str::to_owned))
            .encrypted(true)
            .set_kms_key_id(self.kms_key.map(str::to_owned))
            .tag_specifications(spec(ResourceType::Image))
            .tag_specifications(spec(ResourceType::Snapshot))
            .send()
            .await
            .map_err(call_err("CopyImage", self.region, ami))?;
        let id = out
            .image_id()
            .map(str::to_owned)
            .ok_or_else(|| PromoteError::Call {
                call: "CopyImage",
                region: self.region.to_owned(),
                resource: ami.to_owned(),
                message: "answered no image id".to_owned(),
            })?;
        tracing::info!(
            "copying {ami} to {} as {id} (encrypted with {})",
            self.region,
            self.kms_key.unwrap_or("the region's default EBS key")
        );
        Ok(id)
    }

    async fn describe(&self, id: &str) -> Result<Image, PromoteError> {
        let out = self
            .ec2
            .describe_images()
            .image_ids(id)
            .send()
            .await
            .map_err(call_err("DescribeImages", self.region, id))?;
        out.images()
            .first()
            .cloned()
            .ok_or_else(|| PromoteError::CopyFailed {
                region: self.region.to_owned(),
                copy: id.to_owned(),
                state: "gone".to_owned(),
                reason: Some("DescribeImages no longer lists it".to_owned()),
            })
    }

    /// Polls the copy until it is `available`: after 0 s, then 2 s, ×1.5 per look, at most 15 s
    /// apart, within `timeout`.
    async fn wait(&self, id: &str) -> Result<Image, PromoteError> {
        let began = Instant::now();
        let mut delay = FIRST_POLL;
        loop {
            let image = self.describe(id).await?;
            match image.state() {
                Some(ImageState::Available) => return Ok(image),
                Some(ImageState::Pending | ImageState::Transient) => {}
                _ => {
                    return Err(PromoteError::CopyFailed {
                        region: self.region.to_owned(),
                        copy: id.to_owned(),
                        state: state_of(&image),
                        reason: image
                            .state_reason()
                            .and_then(|r| r.message())
                            .map(str::to_owned),
                    })
                }
            }
            let left = self.timeout.saturating_sub(began.elapsed());
            if left.is_zero() {
                return Err(PromoteError::TimedOut {
                    region: self.region.to_owned(),
                    copy: id.to_owned(),
                    from: self.from.to_owned(),
                    state: state_of(&image),
                    waited: crate::output::secs(began.elapsed()),
                });
            }
            if crate::signals::received() > 0 {
                return Err(PromoteError::Interrupted {
                    region: self.region.to_owned(),
                    copy: id.to_owned(),
                });
            }
            tracing::debug!("{id} in {} is {}", self.region, state_of(&image));
            tokio::time::sleep(delay.min(left)).await;
            delay = delay.mul_f64(1.5).min(MAX_POLL);
        }
    }

    /// CreateTags on the copy and its snapshots (they exist once it is available; a copy taken
    /// up gets the source's tags of now).
    async fn tag(&self, image: &Image) -> Result<(), PromoteError> {
        let id = image.image_id().unwrap_or_default();
        let mut req = self.ec2.create_tags().resources(id);
        for s in ami::snapshots(image) {
            req = req.resources(s);
        }
        req.set_tags(Some(tags(self.tags)))
            .send()
            .await
            .map_err(call_err("CreateTags", self.region, id))?;
        Ok(())
    }
}

/// A promotion's result as text: one line per region.
#[must_use]
pub fn render(r: &PromoteReport) -> String {
    let mut s = format!(
        "promoted {} from {} (stage {}, inputs hash {}):",
        r.source_image_id, r.source_region, r.stage, r.inputs_hash
    );
    for p in &r.regions {
        let what = match (p.source, p.new) {
            (true, _) => "the source",
            (false, true) => "new copy",
            (false, false) => "existing copy",
        };
        let key = if p.source {
            String::new()
        } else {
            format!(
                ", encrypted with {}",
                p.kms_key_id.as_deref().unwrap_or("the default EBS key")
            )
        };
        let shared = if p.shared_with.is_empty() {
            "not shared".to_owned()
        } else {
            format!("shared with {}", p.shared_with.join(", "))
        };
        s.push_str(&format!(
            "\n  {}  {}  {what}{key}, {shared}, inputs hash verified",
            p.region, p.image_id
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tags: &[(&str, &str)]) -> Image {
        let mut b = Image::builder().image_id("ami-src");
        for (k, v) in tags {
            b = b.tags(Tag::builder().key(*k).value(*v).build());
        }
        b.build()
    }

    #[test]
    fn test_carried_tags_are_bake_provenance_and_the_promotion() {
        let src = image(&[
            ("Name", "web"),
            (TAG_INPUTS_HASH, "h1"),
            (ami::TAG_GIT_COMMIT, "abc"),
            ("bake:input:agent", "d1"),
            ("bake:tested", "pass"),
            (ami::TAG_DEPRECATED_AT, "2026-01-01T00:00:00Z"),
            (TAG_PROMOTED_FROM, "eu-west-1/ami-older"),
            (TAG_PROMOTED_STAGE, "dev"),
            ("aws:cloudformation:stack-name", "x"),
        ]);
        let tags = carried_tags(&src, "us-west-2/ami-src", "staging");
        let keys: Vec<&str> = tags.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                ami::TAG_GIT_COMMIT,
                "bake:input:agent",
                TAG_INPUTS_HASH,
                "bake:tested",
                TAG_PROMOTED_FROM,
                TAG_PROMOTED_STAGE
            ]
        );
        let value = |k: &str| tags.iter().find(|(t, _)| t == k).map(|(_, v)| v.as_str());
        assert_eq!(value(TAG_PROMOTED_FROM), Some("us-west-2/ami-src"));
        assert_eq!(value(TAG_PROMOTED_STAGE), Some("staging"));
        assert_eq!(value(TAG_INPUTS_HASH), Some("h1"));
    }

    #[test]
    fn test_stage_check_refuses_other_and_unpromoted_images() {
        let staged = image(&[
            (TAG_PROMOTED_STAGE, "staging"),
            (TAG_PROMOTED_FROM, "us-west-2/ami-1"),
        ]);
        assert_eq!(not_promoted_from(&staged, "staging"), None);
        let why = not_promoted_from(&staged, "qa").unwrap();
        assert!(
            why.starts_with("was promoted from stage \"staging\", not \"qa\""),
            "{why}"
        );
        assert!(why.contains("bake:promoted-from=us-west-2/ami-1"), "{why}");
        let why = not_promoted_from(&image(&[(TAG_INPUTS_HASH, "h")]), "staging").unwrap();
        assert!(why.starts_with("was never promoted"), "{why}");
        use crate::config::check_stage;
        assert!(check_stage("staging").is_ok());
        assert!(check_stage("prod-eu_1.a").is_ok());
        for bad in ["", "a b", "x/y", &"s".repeat(65)] {
            assert!(check_stage(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn test_kms_key_for_each_destination_region() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(kms_key_for(arn, "us-east-1", 2).unwrap(), arn);
        let e = kms_key_for(arn, "eu-west-1", 2).unwrap_err();
        assert!(
            e.starts_with("a key of us-east-1 cannot encrypt a copy in eu-west-1"),
            "{e}"
        );
        let mrk = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd";
        assert_eq!(
            kms_key_for(mrk, "eu-west-1", 2).unwrap(),
            "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd"
        );
        assert_eq!(
            kms_key_for("alias/bake-ami", "eu-west-1", 3).unwrap(),
            "alias/bake-ami"
        );
        assert_eq!(kms_key_for("1234abcd", "eu-west-1", 1).unwrap(), "1234abcd");
        assert!(kms_key_for("1234abcd", "eu-west-1", 2).is_err());
        for ok in [
            arn,
            mrk,
            "alias/x",
            "1234abcd",
            "arn:aws:kms:us-east-1:1:alias/x",
        ] {
            assert!(crate::config::check_kms_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "arn:aws:s3:::bucket",
            "arn:aws:kms:us-east-1:1:grant/x",
            "a b",
            "x:y",
        ] {
            assert!(crate::config::check_kms_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_render_says_each_region() {
        let r = PromoteReport {
            source_image_id: "ami-src".into(),
            source_region: "us-west-2".into(),
            promoted_from: "us-west-2/ami-src".into(),
            stage: "staging".into(),
            inputs_hash: "h1".into(),
            regions: vec![
                Promoted {
                    region: "us-east-1".into(),
                    image_id: "ami-a".into(),
                    new: true,
                    kms_key_id: Some("alias/k".into()),
                    shared_with: vec!["111122223333".into()],
                    inputs_hash: "h1".into(),
                    ..Promoted::default()
                },
                Promoted {
                    region: "us-west-2".into(),
                    image_id: "ami-src".into(),
                    source: true,
                    inputs_hash: "h1".into(),
                    ..Promoted::default()
                },
            ],
        };
        assert_eq!(
            render(&r),
            "promoted ami-src from us-west-2 (stage staging, inputs hash h1):\n  us-east-1  ami-a  new copy, encrypted with alias/k, shared with 111122223333, inputs hash verified\n  us-west-2  ami-src  the source, not shared, inputs hash verified"
        );
    }
}
