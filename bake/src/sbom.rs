//! Images' SBOMs ([`bake_common::sbom`]): `bake build` stores the one the image build wrote
//! (`bake-agent sbom`, at the end of packer/scripts/cleanup.sh) as an S3 object of `[sbom]
//! bucket`, `PREFIX<AMI id>.cdx.json`, and tags the AMI with where it is and its SHA-256;
//! `bake release` reads the running image's and the new image's back, checks each against its
//! digest, and prints what differs before it starts the refresh.
//!
//! Tags on the AMI (copied with every other provenance tag by `bake promote`):
//! - `bake:sbom` = `s3://BUCKET/KEY`,
//! - `bake:sbom-region` = the bucket's region,
//! - `bake:sbom-sha256` = lowercase hex SHA-256 of the object's bytes.

use aws_sdk_ec2::types::Image;
use aws_smithy_types::error::display::DisplayErrorContext;
use bake_common::sbom::{self, Bom, Diff};

use crate::aws::Aws;
use crate::config::SbomSettings;

/// Where the SBOM is: `s3://BUCKET/KEY`.
pub const TAG_SBOM: &str = "bake:sbom";
/// The bucket's region.
pub const TAG_SBOM_REGION: &str = "bake:sbom-region";
/// Its SHA-256.
pub const TAG_SBOM_SHA256: &str = "bake:sbom-sha256";

/// An SBOM stored with an image.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Stored {
    /// `s3://BUCKET/KEY`.
    pub url: String,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Components per ecosystem (`deb`, `npm`, `cargo`, `generic`).
    pub components: std::collections::BTreeMap<String, usize>,
}

/// What can go wrong storing or reading an SBOM.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// The document the build printed is not CycloneDX.
    #[error("the image build's SBOM: {0}")]
    Invalid(sbom::SbomError),
    /// PutObject failed.
    #[error("storing the SBOM of {ami} as s3://{bucket}/{key} (sbom.bucket): {source}")]
    Put {
        /// The image.
        ami: String,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The SDK's error, with its context.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// GetObject failed.
    #[error("reading the SBOM of {ami} from {url}: {source}")]
    Get {
        /// The image.
        ami: String,
        /// `s3://…`.
        url: String,
        /// The SDK's error, with its context.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The object's digest is not the tagged one.
    #[error("the SBOM of {ami} at {url} has SHA-256 {got}, the image's tag bake:sbom-sha256 says {tagged}: it was changed after the build")]
    Digest {
        /// The image.
        ami: String,
        /// `s3://…`.
        url: String,
        /// What the object hashes to.
        got: String,
        /// The tag.
        tagged: String,
    },
    /// A tag is not what bake writes.
    #[error("{ami}: tag {TAG_SBOM} is {value:?}, not s3://BUCKET/KEY")]
    BadTag {
        /// The image.
        ami: String,
        /// The value.
        value: String,
    },
    /// The stored document does not parse.
    #[error("the SBOM of {ami} at {url}: {source}")]
    Parse {
        /// The image.
        ami: String,
        /// `s3://…`.
        url: String,
        /// Why.
        source: sbom::SbomError,
    },
}

fn tag<'a>(image: &'a Image, key: &str) -> Option<&'a str> {
    image
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// Stores `json` (the build's SBOM) as `PREFIX<ami>.cdx.json` and tags the AMI with it.
///
/// # Errors
/// Not a CycloneDX document, PutObject or CreateTags failed.
pub async fn store(aws: &Aws, s: &SbomSettings, ami: &str, json: &[u8]) -> anyhow::Result<Stored> {
    let bom = Bom::parse(json).map_err(SbomError::Invalid)?;
    let key = format!("{}{ami}.cdx.json", s.prefix);
    let sha256 = sbom::sha256_hex(json);
    aws.s3
        .put_object()
        .bucket(&s.bucket)
        .key(&key)
        .content_type("application/vnd.cyclonedx+json")
        .body(json.to_vec().into())
        .send()
        .await
        .map_err(|e| SbomError::Put {
            ami: ami.to_owned(),
            bucket: s.bucket.clone(),
            key: key.clone(),
            source: DisplayErrorContext(e).to_string().into(),
        })?;
    let url = format!("s3://{}/{key}", s.bucket);
    let region = aws.region.clone().unwrap_or_default();
    crate::ami::tag_image_only(
        &aws.ec2,
        ami,
        &[
            (TAG_SBOM.to_owned(), url.clone()),
            (TAG_SBOM_REGION.to_owned(), region),
            (TAG_SBOM_SHA256.to_owned(), sha256.clone()),
        ],
    )
    .await?;
    Ok(Stored {
        url,
        sha256,
        components: bom.counts(),
    })
}

/// The image's SBOM, checked against its digest; `None` when the image has none (built
/// without `[sbom]`, by an older bake, or not by bake).
///
/// # Errors
/// A malformed tag, GetObject failed, the digest differs, not CycloneDX.
pub async fn load(aws: &Aws, image: &Image) -> Result<Option<Bom>, SbomError> {
    let ami = image.image_id().unwrap_or_default().to_owned();
    let (Some(url), Some(tagged)) = (tag(image, TAG_SBOM), tag(image, TAG_SBOM_SHA256)) else {
        return Ok(None);
    };
    let Some((bucket, key)) = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
    else {
        return Err(SbomError::BadTag {
            ami,
            value: url.to_owned(),
        });
    };
    let client = match tag(image, TAG_SBOM_REGION) {
        Some(r) if Some(r) != aws.region.as_deref() && !r.is_empty() => aws.s3_in(r),
        _ => aws.s3.clone(),
    };
    let get = |e: String| SbomError::Get {
        ami: ami.clone(),
        url: url.to_owned(),
        source: e.into(),
    };
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| get(DisplayErrorContext(e).to_string()))?;
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| get(e.to_string()))?
        .into_bytes();
    let got = sbom::sha256_hex(&bytes);
    if got != tagged {
        return Err(SbomError::Digest {
            ami,
            url: url.to_owned(),
            got,
            tagged: tagged.to_owned(),
        });
    }
    Bom::parse(&bytes)
        .map(Some)
        .map_err(|source| SbomError::Parse {
            ami,
            url: url.to_owned(),
            source,
        })
}

/// What `bake release` reports of the two images' SBOMs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SbomDiff {
    /// The running image.
    pub from: String,
    /// The image released.
    pub to: String,
    /// The difference, when both SBOMs could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
    /// Why there is no difference to show (an image without an SBOM, one that cannot be
    /// read or does not match its digest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl SbomDiff {
    /// The lines printed before the refresh: a summary, then one line per difference (at most
    /// `limit`, then how many more).
    #[must_use]
    pub fn lines(&self, limit: usize) -> Vec<String> {
        let head = format!("SBOM {} → {}", self.from, self.to);
        match (&self.diff, &self.unavailable) {
            (Some(d), _) if d.is_empty() => vec![format!(
                "{head}: no package changed ({} unchanged)",
                d.unchanged
            )],
            (Some(d), _) => {
                let mut out = vec![format!("{head}: {}", d.summary())];
                let all = d.lines();
                let n = all.len();
                out.extend(all.into_iter().take(limit).map(|l| format!("  {l}")));
                if n > limit {
                    out.push(format!(
                        "  … {} more (--output json lists them all)",
                        n - limit
                    ));
                }
                out
            }
            (None, why) => vec![format!(
                "{head}: no difference shown: {}",
                why.as_deref().unwrap_or("unknown")
            )],
        }
    }
}

/// Compares the running image's SBOM with the new one's. Never fails: what cannot be read is
/// said in `unavailable` (and warned about), and the release goes on.
pub async fn compare(aws: &Aws, running: &str, new: &str) -> SbomDiff {
    let mut d = SbomDiff {
        from: running.to_owned(),
        to: new.to_owned(),
        diff: None,
        unavailable: None,
    };
    let load_one = |id: &str| {
        let id = id.to_owned();
        async move {
            let image = crate::ami::describe(&aws.ec2, &id)
                .await
                .map_err(|e| e.to_string())?;
            match load(aws, &image).await {
                Ok(Some(b)) => Ok(b),
                Ok(None) => Err(format!(
                    "{id} has no SBOM (tags {TAG_SBOM}, {TAG_SBOM_SHA256})"
                )),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match tokio::join!(load_one(running), load_one(new)) {
        (Ok(a), Ok(b)) => d.diff = Some(sbom::diff(&a, &b)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("SBOM difference not shown: {e}");
            d.unavailable = Some(e);
        }
    }
    d
}
