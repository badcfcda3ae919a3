//! Who this instance is: id, region, availability zone, Auto Scaling group, and whether it is
//! the boot test of an image (`bake test-image`).
//!
//! An image-test instance is launched from the fleet's launch template, so its userdata names the
//! fleet's group (`[identity] asg_name`), but outside that group and its load balancer, with the
//! instance tag [`IMAGE_TEST_TAG`] (the SSM parameter its report goes to) and instance metadata
//! tags enabled. The tag is read whatever `[identity] imds_tags` says, and wins over every
//! source of a group name but `standalone`: such an instance has no group, completes no
//! lifecycle hook, marks nothing unhealthy and starts no rollout.
//!
//! A migration instance (`bake release` with `[migrate]`) is launched the same way with the tag
//! [`MIGRATE_TAG`] (the SSM path its migration's log and result go to): it joins no group
//! either, and its agent does not start the app (the new release's app may need the migration
//! it is there to run); `bake-migrate.service` runs the migration once.

use aws_smithy_types::error::display::DisplayErrorContext;

use crate::config::IdentitySettings;
use crate::imds::{Imds, ImdsClientError};

/// Errors finding the instance's identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Metadata could not be read.
    #[error(transparent)]
    Imds(Box<ImdsClientError>),
    /// DescribeAutoScalingInstances failed.
    #[error("DescribeAutoScalingInstances for {instance_id}: {message}")]
    Describe {
        /// The instance.
        instance_id: String,
        /// The SDK error with its context.
        message: String,
    },
    /// The `bake:image-test` or `bake:migrate` tag is not an SSM parameter name.
    #[error("instance tag {tag} = {value:?} is not an SSM parameter name: {reason}")]
    ParameterTag {
        /// The tag.
        tag: &'static str,
        /// The tag's value (at most its first 100 characters).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The instance belongs to no group and the config does not say `standalone = true`.
    #[error("instance {instance_id} is in no Auto Scaling group (set [identity] asg_name, or standalone = true)")]
    NoGroup {
        /// The instance.
        instance_id: String,
    },
}

impl From<ImdsClientError> for IdentityError {
    fn from(e: ImdsClientError) -> Self {
        Self::Imds(Box::new(e))
    }
}

/// The instance's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `i-…`.
    pub instance_id: String,
    /// e.g. `eu-west-1`.
    pub region: String,
    /// e.g. `eu-west-1a`.
    pub availability_zone: String,
    /// The group, `None` only when standalone.
    pub asg_name: Option<String>,
    /// The image the instance was launched from (`ami-id` in the metadata): the release its
    /// metrics are published under. `None` when the metadata has none (not on EC2).
    pub image_id: Option<String>,
    /// The SSM parameter an image-test instance reports to (the value of its instance tag
    /// [`IMAGE_TEST_TAG`]); `None` on every other instance.
    pub image_test: Option<String>,
    /// The SSM path a migration instance writes its migration's log and result under (the
    /// value of its instance tag [`MIGRATE_TAG`]); `None` on every other instance.
    pub migrate: Option<String>,
}

impl Identity {
    /// The tag and its value when this instance is launched by bake outside the group (an
    /// image test or a migration): no group, no hooks, no jobs, no reaping.
    #[must_use]
    pub fn outside_group(&self) -> Option<(&'static str, &str)> {
        match (&self.image_test, &self.migrate) {
            (Some(p), _) => Some((IMAGE_TEST_TAG, p.as_str())),
            (None, Some(p)) => Some((MIGRATE_TAG, p.as_str())),
            (None, None) => None,
        }
    }
}

/// The instance tag of an image-test instance (`bake test-image`); its value is the SSM
/// parameter the instance's report (`bake-agent check --live --report`) goes to.
pub const IMAGE_TEST_TAG: &str = "bake:image-test";
/// The metadata path of [`IMAGE_TEST_TAG`] (served only when the instance was launched with
/// metadata tags enabled; 404 otherwise, as for an instance without the tag).
pub const IMAGE_TEST_TAG_PATH: &str = "/latest/meta-data/tags/instance/bake:image-test";
/// The instance tag of a migration instance (`bake release` with `[migrate]`); its value is the
/// SSM path `bake-agent migrate` writes the migration's log and result under.
pub const MIGRATE_TAG: &str = "bake:migrate";
/// The metadata path of [`MIGRATE_TAG`].
pub const MIGRATE_TAG_PATH: &str = "/latest/meta-data/tags/instance/bake:migrate";
/// The longest SSM parameter name (path included), per the PutParameter API reference.
pub const MAX_PARAMETER_NAME: usize = 1011;

/// Checks that `name` is a fully qualified SSM parameter name: starts with `/`, only ASCII
/// letters, digits and `_ . - /`, at most [`MAX_PARAMETER_NAME`] characters.
pub fn check_parameter_name(name: &str) -> Result<(), &'static str> {
    if !name.starts_with('/') {
        return Err("it must start with '/'");
    }
    if name.len() > MAX_PARAMETER_NAME {
        return Err("it is longer than 1011 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
    {
        return Err("only letters, digits and '_', '.', '-', '/' are allowed");
    }
    Ok(())
}

/// The instance's [`IMAGE_TEST_TAG`], validated: `None` when the metadata has no such tag (or
/// no tags at all).
pub async fn image_test_tag(imds: &Imds) -> Result<Option<String>, IdentityError> {
    parameter_tag(imds, IMAGE_TEST_TAG, IMAGE_TEST_TAG_PATH).await
}

/// The instance's [`MIGRATE_TAG`], validated: `None` when the metadata has no such tag.
pub async fn migrate_tag(imds: &Imds) -> Result<Option<String>, IdentityError> {
    parameter_tag(imds, MIGRATE_TAG, MIGRATE_TAG_PATH).await
}

/// Either tag of an instance bake launches outside the group: `tag` at metadata `path`, an
/// SSM parameter name.
async fn parameter_tag(
    imds: &Imds,
    tag: &'static str,
    path: &str,
) -> Result<Option<String>, IdentityError> {
    let Some(value) = imds.get_opt(path).await? else {
        return Ok(None);
    };
    let value = value.trim().to_owned();
    check_parameter_name(&value).map_err(|reason| IdentityError::ParameterTag {
        tag,
        value: value.chars().take(100).collect(),
        reason,
    })?;
    Ok(Some(value))
}

/// Whether this is an instance bake launched outside the group (image test or migration): the
/// tag and its value.
pub async fn outside_group_tag(
    imds: &Imds,
) -> Result<Option<(&'static str, String)>, IdentityError> {
    if let Some(p) = image_test_tag(imds).await? {
        return Ok(Some((IMAGE_TEST_TAG, p)));
    }
    Ok(migrate_tag(imds).await?.map(|p| (MIGRATE_TAG, p)))
}

/// Instance id, region, AZ, image and the image-test tag from IMDS (the group is resolved
/// later, once AWS clients exist).
pub async fn from_imds(imds: &Imds) -> Result<Identity, IdentityError> {
    let instance_id = imds.get("/latest/meta-data/instance-id").await?;
    let availability_zone = imds
        .get("/latest/meta-data/placement/availability-zone")
        .await?;
    let region = match imds.get_opt("/latest/meta-data/placement/region").await? {
        Some(r) => r,
        // Older metadata versions lack placement/region: the AZ minus its letter.
        None => availability_zone
            .trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .to_owned(),
    };
    let image_id = imds.get_opt("/latest/meta-data/ami-id").await?;
    let image_test = image_test_tag(imds).await?;
    let migrate = migrate_tag(imds).await?;
    Ok(Identity {
        instance_id,
        region,
        availability_zone,
        asg_name: None,
        image_id,
        image_test,
        migrate,
    })
}

/// The group name: none when standalone or on an image-test or migration instance (whatever `asg_name` the
/// fleet's userdata sets: the instance is not in the group), then the config, then the IMDS tag
/// `aws:autoscaling:groupName` (only present when the launch template allows tags in metadata),
/// then DescribeAutoScalingInstances.
pub async fn resolve_group(
    id: &mut Identity,
    settings: &IdentitySettings,
    imds: &Imds,
    asg: &aws_sdk_autoscaling::Client,
) -> Result<(), IdentityError> {
    if settings.standalone {
        id.asg_name = None;
        return Ok(());
    }
    if id.outside_group().is_some() {
        id.asg_name = None;
        return Ok(());
    }
    if let Some(name) = &settings.asg_name {
        id.asg_name = Some(name.clone());
        return Ok(());
    }
    if settings.imds_tags {
        if let Some(name) = imds
            .get_opt("/latest/meta-data/tags/instance/aws:autoscaling:groupName")
            .await?
        {
            id.asg_name = Some(name);
            return Ok(());
        }
    }
    let out = asg
        .describe_auto_scaling_instances()
        .instance_ids(&id.instance_id)
        .send()
        .await
        .map_err(|e| IdentityError::Describe {
            instance_id: id.instance_id.clone(),
            message: DisplayErrorContext(&e).to_string(),
        })?;
    match out
        .auto_scaling_instances()
        .first()
        .and_then(|i| i.auto_scaling_group_name())
    {
        Some(name) => {
            id.asg_name = Some(name.to_owned());
            Ok(())
        }
        None => Err(IdentityError::NoGroup {
            instance_id: id.instance_id.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parameter_names() {
        assert!(check_parameter_name("/bake/prod/image-tests/ami-0abc/20261203T071500Z").is_ok());
        assert!(check_parameter_name("/a_b.c-d").is_ok());
        assert_eq!(
            check_parameter_name("bake/x"),
            Err("it must start with '/'")
        );
        assert!(check_parameter_name("/bake/x y").is_err());
        assert!(check_parameter_name("/bake/x:y").is_err());
        assert!(check_parameter_name("/bake/é").is_err());
        let long = format!("/{}", "a".repeat(MAX_PARAMETER_NAME - 1));
        assert!(check_parameter_name(&long).is_ok());
        assert_eq!(
            check_parameter_name(&format!("{long}a")),
            Err("it is longer than 1011 characters")
        );
    }
}
