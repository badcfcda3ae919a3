//! The target's launch template: its default and latest version numbers, the image of each
//! version, and setting the default (`bake release`, `bake rollback`, `bake status`, `bake
//! prune`).

use std::collections::BTreeMap;

use crate::aws::Aws;
use aws_sdk_ec2::error::SdkError;
use aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsError;
use aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesError;
use aws_sdk_ec2::operation::modify_launch_template::ModifyLaunchTemplateError;
use aws_smithy_types::error::display::DisplayErrorContext;

/// A launch template call that failed, with the SDK's error kept whole (boxed: it is large).
#[derive(Debug, thiserror::Error)]
pub enum LaunchTemplateError {
    /// `DescribeLaunchTemplates` failed.
    #[error("describing launch template '{lt}': {}", DisplayErrorContext(.source))]
    Describe {
        /// The launch template id.
        lt: String,
        /// The SDK's error.
        source: Box<SdkError<DescribeLaunchTemplatesError>>,
    },
    /// There is no launch template with that id.
    #[error("launch template '{lt}' does not exist")]
    Missing {
        /// The launch template id.
        lt: String,
    },
    /// `ModifyLaunchTemplate` (the default version) failed.
    #[error("setting the default version of launch template '{lt}' to {version}: {}", DisplayErrorContext(.source))]
    SetDefault {
        /// The launch template id.
        lt: String,
        /// The version that was to be the default.
        version: i64,
        /// The SDK's error.
        source: Box<SdkError<ModifyLaunchTemplateError>>,
    },
    /// `DescribeLaunchTemplateVersions` failed.
    #[error("describing the versions of launch template '{lt}': {}", DisplayErrorContext(.source))]
    DescribeVersions {
        /// The launch template id.
        lt: String,
        /// The SDK's error.
        source: Box<SdkError<DescribeLaunchTemplateVersionsError>>,
    },
}

/// The default and latest version numbers of launch template `lt`.
pub async fn versions(aws: &Aws, lt: &str) -> Result<(i64, i64), LaunchTemplateError> {
    let out = aws
        .ec2
        .describe_launch_templates()
        .launch_template_ids(lt)
        .send()
        .await
        .map_err(|e| LaunchTemplateError::Describe {
            lt: lt.to_owned(),
            source: Box::new(e),
        })?;
    let t = out
        .launch_templates()
        .first()
        .ok_or_else(|| LaunchTemplateError::Missing { lt: lt.to_owned() })?;
    Ok((
        t.default_version_number().unwrap_or(1),
        t.latest_version_number().unwrap_or(1),
    ))
}

/// Sets the default version of `lt`.
pub async fn set_default(aws: &Aws, lt: &str, version: i64) -> Result<(), LaunchTemplateError> {
    aws.ec2
        .modify_launch_template()
        .launch_template_id(lt)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(|e| LaunchTemplateError::SetDefault {
            lt: lt.to_owned(),
            version,
            source: Box::new(e),
        })?;
    Ok(())
}

/// Every version of `lt` that names an image: version → image.
pub async fn images(aws: &Aws, lt: &str) -> Result<BTreeMap<i64, String>, LaunchTemplateError> {
    let mut images = BTreeMap::new();
    let mut pages = aws
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(lt)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| LaunchTemplateError::DescribeVersions {
            lt: lt.to_owned(),
            source: Box::new(e),
        })?;
        for v in page.launch_template_versions() {
            if let (Some(n), Some(img)) = (
                v.version_number(),
                v.launch_template_data().and_then(|d| d.image_id()),
            ) {
                images.insert(n, img.to_owned());
            }
        }
    }
    Ok(images)
}
