//! The emulator's side of a fleet: the SDK clients of the watcher, and the fixtures a scenario
//! starts from (an AMI per app version, a launch template and an Auto Scaling group with hooks).

use anyhow::Context;
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use bake_common::aws::AwsSettings;

use crate::Aws;

use super::{APP_VERSION_TAG, LAUNCH_HOOK, TERMINATE_HOOK};

/// The clients of the fleet's watcher: `settings` (the emulator's) with its dummy credentials.
pub(crate) async fn clients(settings: &AwsSettings) -> Aws {
    let conf = bake_common::aws::sdk_config(settings).await;
    let creds = aws_credential_types::provider::SharedCredentialsProvider::new(
        aws_credential_types::Credentials::new("testing", "testing", None, None, "bake-fleet"),
    );
    Aws::from_conf(&conf.into_builder().credentials_provider(creds).build())
}

/// Registers an AMI for app `version` (tag `bake:app-version`), as `bake build` would make.
pub async fn register_version_ami(aws: &Aws, version: &str) -> anyhow::Result<String> {
    let out = aws
        .ec2
        .register_image()
        .name(format!("fleet-app-{version}"))
        .description(format!("sample app {version}"))
        .root_device_name("/dev/xvda")
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .send()
        .await
        .context("RegisterImage")?;
    let ami = out
        .image_id()
        .context("RegisterImage returned no id")?
        .to_owned();
    aws.ec2
        .create_tags()
        .resources(&ami)
        .tags(Tag::builder().key(APP_VERSION_TAG).value(version).build())
        .send()
        .await
        .context("CreateTags")?;
    Ok(ami)
}

/// A launch template on `ami` (version 1, with `userdata`: [`super::userdata::userdata`] for
/// booted instances; the process runtime writes its own configuration) and group `name`
/// of `capacity` instances on it over two AZs, with a launch hook ([`LAUNCH_HOOK`], ABANDON after
/// `3000` emulated seconds) and a terminate hook ([`TERMINATE_HOOK`], CONTINUE after 3000), and
/// the environment's one secret, as the data stack makes it: a SecureString
/// `/bake/<name>/app/db/connection-string` (the agent fails closed on an empty path). The
/// group names version 1 (not `$Default`) so that a refresh can roll back. Returns the launch
/// template id.
pub async fn create_group(
    aws: &Aws,
    name: &str,
    ami: &str,
    capacity: i32,
    userdata: &str,
) -> anyhow::Result<String> {
    aws.ssm
        .put_parameter()
        .name(format!("/bake/{name}/app/db/connection-string"))
        .value(format!("postgres://app:fleet-{name}@db.internal/app"))
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .context("PutParameter")?;
    let userdata = aws_smithy_types::base64::encode(userdata);
    let lt = aws
        .ec2
        .create_launch_template()
        .launch_template_name(format!("{name}-lt"))
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(ami)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .user_data(userdata)
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::LaunchTemplate)
                .tags(Tag::builder().key("fleet").value(name).build())
                .build(),
        )
        .send()
        .await
        .context("CreateLaunchTemplate")?;
    let lt_id = lt
        .launch_template()
        .and_then(|l| l.launch_template_id())
        .context("no launch template id")?
        .to_owned();
    aws.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(&lt_id)
                .version("1")
                .build(),
        )
        .min_size(0)
        .max_size(capacity * 2 + 1)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .availability_zones("us-east-1b")
        .send()
        .await
        .context("CreateAutoScalingGroup")?;
    for (hook, transition, default) in [
        (LAUNCH_HOOK, "autoscaling:EC2_INSTANCE_LAUNCHING", "ABANDON"),
        (
            TERMINATE_HOOK,
            "autoscaling:EC2_INSTANCE_TERMINATING",
            "CONTINUE",
        ),
    ] {
        aws.asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(name)
            .lifecycle_hook_name(hook)
            .lifecycle_transition(transition)
            .default_result(default)
            .heartbeat_timeout(3000)
            .send()
            .await
            .with_context(|| format!("PutLifecycleHook {hook}"))?;
    }
    aws.asg
        .update_auto_scaling_group()
        .auto_scaling_group_name(name)
        .min_size(capacity)
        .desired_capacity(capacity)
        .send()
        .await
        .context("UpdateAutoScalingGroup")?;
    Ok(lt_id)
}
