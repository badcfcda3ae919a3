//! Who this instance is: id, region, availability zone, Auto Scaling group.

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
}

/// Instance id, region, AZ and image from IMDS (the group is resolved later, once AWS clients
/// exist).
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
    Ok(Identity {
        instance_id,
        region,
        availability_zone,
        asg_name: None,
        image_id,
    })
}

/// The group name: config, then the IMDS tag `aws:autoscaling:groupName` (only present when the
/// launch template allows tags in metadata), then DescribeAutoScalingInstances.
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
