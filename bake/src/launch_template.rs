//! The target's launch template: its default and latest version numbers, the image of each
//! version, and setting the default (`bake release`, `bake rollback`, `bake status`, `bake
//! prune`).

use std::collections::BTreeMap;

use aws_smithy_types::error::display::DisplayErrorContext;
use bake_common::aws::Aws;

use crate::exit::{coded, Exit};

fn aws_err<E: std::error::Error + 'static, R: std::fmt::Debug>(
    what: String,
) -> impl FnOnce(aws_sdk_ec2::error::SdkError<E, R>) -> anyhow::Error {
    move |e| coded(Exit::Aws, format!("{what}: {}", DisplayErrorContext(&e)))
}

/// The default and latest version numbers of launch template `lt`.
pub async fn versions(aws: &Aws, lt: &str) -> anyhow::Result<(i64, i64)> {
    let out = aws
        .ec2
        .describe_launch_templates()
        .launch_template_ids(lt)
        .send()
        .await
        .map_err(aws_err(format!("describing launch template '{lt}'")))?;
    let t = out
        .launch_templates()
        .first()
        .ok_or_else(|| coded(Exit::Aws, format!("launch template '{lt}' does not exist")))?;
    Ok((
        t.default_version_number().unwrap_or(1),
        t.latest_version_number().unwrap_or(1),
    ))
}

/// Sets the default version of `lt`.
pub async fn set_default(aws: &Aws, lt: &str, version: i64) -> anyhow::Result<()> {
    aws.ec2
        .modify_launch_template()
        .launch_template_id(lt)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(aws_err(format!(
            "setting the default version of launch template '{lt}' to {version}"
        )))?;
    Ok(())
}

/// Every version of `lt` that names an image: version → image.
pub async fn images(aws: &Aws, lt: &str) -> anyhow::Result<BTreeMap<i64, String>> {
    let mut images = BTreeMap::new();
    let mut pages = aws
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(lt)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws_err(format!(
            "describing the versions of launch template '{lt}'"
        )))?;
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
