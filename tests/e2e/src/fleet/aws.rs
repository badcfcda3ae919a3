//! The emulator's side of a fleet: the SDK clients of the watcher, and the fixtures a scenario
//! starts from (an AMI per app version, a launch template and an Auto Scaling group with hooks).

use anyhow::Context;
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};

use crate::Aws;

use super::{APP_VERSION_TAG, LAUNCH_HOOK, TERMINATE_HOOK};

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

/// A group to create with [`create_group`].
#[derive(Clone, Debug)]
pub struct GroupSpec<'a> {
    /// The environment (`EnvName`): its secrets are under `/bake/<env>/app`.
    pub env: &'a str,
    /// The group's name (fleet.yaml's is `bake-<env>`, the name its IAM policies are scoped to).
    pub name: &'a str,
    /// The AMI of launch template version 1.
    pub ami: &'a str,
    /// Instances.
    pub capacity: i32,
    /// The launch template's userdata.
    pub userdata: &'a str,
    /// The launch template's `IamInstanceProfile` (an ARN); `None`: none.
    pub instance_profile: Option<&'a str>,
    /// The app's `DB_CONNECTION_STRING`, the environment's secret
    /// `/bake/<env>/app/db/connection-string`: the fleet's database as its instances reach it
    /// ([`crate::db::Postgres::connection_string`] at [`crate::boot::DB_HOST`]).
    pub db_connection_string: &'a str,
}

/// A launch template on `g.ami` (version 1, with `g.userdata`: [`super::userdata::userdata`]
/// for booted instances; the process runtime writes its own configuration; tagged `bake:env`
/// as fleet.yaml tags its own; with `g.instance_profile`) and group `g.name` of `g.capacity`
/// instances on it over two AZs, with a launch hook ([`LAUNCH_HOOK`], ABANDON after `3000`
/// emulated seconds) and a terminate hook ([`TERMINATE_HOOK`], CONTINUE after 3000), and the
/// environment's one secret, as an operator puts it after the data stack (docs/deploy.md): a SecureString
/// `/bake/<env>/app/db/connection-string` (the agent fails closed on an empty path). The group
/// names version 1 (not `$Default`) so that a refresh can roll back. Returns the launch template
/// id.
pub async fn create_group(aws: &Aws, g: &GroupSpec<'_>) -> anyhow::Result<String> {
    let GroupSpec {
        env,
        name,
        ami,
        capacity,
        userdata,
        instance_profile,
        db_connection_string,
    } = *g;
    aws.ssm
        .put_parameter()
        .name(format!("/bake/{env}/app/db/connection-string"))
        .value(db_connection_string)
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
                .set_iam_instance_profile(instance_profile.map(|arn| {
                    aws_sdk_ec2::types::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                        .arn(arn)
                        .build()
                }))
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::LaunchTemplate)
                .tags(Tag::builder().key("fleet").value(name).build())
                .tags(Tag::builder().key("bake:env").value(env).build())
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

/// An SNS topic `name` (the alarms' topic of the fleet stack), made through a CloudFormation
/// stack of its own: its ARN.
pub async fn create_topic(aws: &Aws, name: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "Resources": { "Topic": { "Type": "AWS::SNS::Topic", "Properties": { "TopicName": name } } },
        "Outputs": { "Arn": { "Value": { "Ref": "Topic" } } },
    });
    let stack = format!("{name}-topic");
    aws.cfn
        .create_stack()
        .stack_name(&stack)
        .template_body(body.to_string())
        .send()
        .await
        .context("CreateStack (SNS topic)")?;
    for _ in 0..100 {
        let out = aws
            .cfn
            .describe_stacks()
            .stack_name(&stack)
            .send()
            .await
            .context("DescribeStacks")?;
        let s = out.stacks().first().context("no such stack")?;
        if let Some(arn) = s
            .outputs()
            .iter()
            .find(|o| o.output_key() == Some("Arn"))
            .and_then(|o| o.output_value())
        {
            return Ok(arn.to_owned());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("stack {stack} made no topic")
}

/// Alarm `logical_id` of `cloudformation/fleet.yaml` (read from the template by
/// `tests/infra/cfn.py`), put for environment `env` (`EnvName`) and its group `group` (`Fleet`)
/// with its actions on `topic`: the alarm's name. A `Ref` to a template parameter takes its value
/// from `params` (name, value; a `Number` parameter's value is a number), else the parameter's
/// `Default`; a parameter with neither, or any other `Ref`, is an error naming it.
pub async fn put_template_alarm(
    aws: &Aws,
    logical_id: &str,
    env: &str,
    group: &str,
    topic: &str,
    params: &[(&str, &str)],
) -> anyhow::Result<String> {
    let repo = crate::paths::repo_root();
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import cfn
logical, env, group, topic, given = sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], json.loads(sys.argv[7])
template = cfn.load(sys.argv[2])
declared = template.get("Parameters", {})
unknown = sorted(set(given) - set(declared))
if unknown:
    sys.exit(f"no such template parameter: {', '.join(unknown)}")
if logical not in template["Resources"]:
    sys.exit(f"no such resource: {logical}")
props = template["Resources"][logical]["Properties"]
def param(name):
    decl = declared[name]
    value = given.get(name, decl.get("Default"))
    if value is None:
        sys.exit(f"parameter {name} has no value and no Default")
    if decl.get("Type") != "Number":
        return str(value)
    number = float(value)
    return int(number) if number.is_integer() else number
def ref(name):
    if name == "Fleet":
        return group
    if name == "AlarmTopic":
        return topic
    if name in declared:
        return param(name)
    sys.exit(f"{logical}: Ref {name} is neither a parameter nor the group or the topic")
def resolve(v):
    if isinstance(v, dict) and list(v) == ["Ref"]:
        return ref(v["Ref"])
    if isinstance(v, dict) and list(v) == ["Fn::Sub"] and isinstance(v["Fn::Sub"], str):
        return v["Fn::Sub"].replace("${EnvName}", env)
    if isinstance(v, dict):
        return {k: resolve(x) for k, x in v.items()}
    if isinstance(v, list):
        return [resolve(x) for x in v]
    return v
print(json.dumps(resolve(props)))
"#;
    let given: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    let out = std::process::Command::new(repo.join("tests/emulator/.venv/bin/python"))
        .arg("-c")
        .arg(script)
        .arg(repo.join("tests/infra"))
        .arg(repo.join("cloudformation/fleet.yaml"))
        .args([logical_id, env, group, topic])
        .arg(serde_json::Value::Object(given).to_string())
        .output()
        .context("reading fleet.yaml's alarm with tests/infra/cfn.py")?;
    if !out.status.success() {
        anyhow::bail!(
            "fleet.yaml's {logical_id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let p: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let s = |k: &str| {
        p[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("fleet.yaml's {logical_id} has no {k}: {p}"))
    };
    let n = |k: &str| {
        p[k].as_f64()
            .with_context(|| format!("fleet.yaml's {logical_id} has no number {k}: {p}"))
    };
    let i = |k: &str| -> anyhow::Result<i32> {
        p[k].as_i64()
            .and_then(|v| i32::try_from(v).ok())
            .with_context(|| format!("fleet.yaml's {logical_id} has no integer {k}: {p}"))
    };
    let name = s("AlarmName")?;
    let mut req = aws
        .cw
        .put_metric_alarm()
        .alarm_name(&name)
        .namespace(s("Namespace")?)
        .metric_name(s("MetricName")?)
        .statistic(aws_sdk_cloudwatch::types::Statistic::from(
            s("Statistic")?.as_str(),
        ))
        .period(i("Period")?)
        .evaluation_periods(i("EvaluationPeriods")?)
        .threshold(n("Threshold")?)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::from(
            s("ComparisonOperator")?.as_str(),
        ))
        .treat_missing_data(s("TreatMissingData")?);
    if !p["DatapointsToAlarm"].is_null() {
        req = req.datapoints_to_alarm(i("DatapointsToAlarm")?);
    }
    if let Some(d) = p["AlarmDescription"].as_str() {
        req = req.alarm_description(d);
    }
    for d in p["Dimensions"].as_array().into_iter().flatten() {
        req = req.dimensions(
            aws_sdk_cloudwatch::types::Dimension::builder()
                .name(d["Name"].as_str().unwrap_or_default())
                .value(d["Value"].as_str().unwrap_or_default())
                .build(),
        );
    }
    for a in p["AlarmActions"].as_array().into_iter().flatten() {
        req = req.alarm_actions(a.as_str().unwrap_or_default());
    }
    for a in p["OKActions"].as_array().into_iter().flatten() {
        req = req.ok_actions(a.as_str().unwrap_or_default());
    }
    req.send().await.context("PutMetricAlarm")?;
    Ok(name)
}

/// What the emulator's SNS recorded as published to `topic` (alarm notifications among them):
/// each message's `Subject` and `Message`, from `GET /bake-emulator/sns-notifications`.
pub fn sns_notifications(emulator: &str, topic: &str) -> anyhow::Result<Vec<(String, String)>> {
    let addr: std::net::SocketAddr = emulator
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("emulator address {emulator}"))?;
    let path = format!(
        "/bake-emulator/sns-notifications?TopicArn={}",
        topic.replace(':', "%3A")
    );
    let (code, body) = super::http_get(addr, &path)?;
    if code != 200 {
        anyhow::bail!("GET {path}: {code} {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["Subject"].as_str().unwrap_or_default().to_owned(),
                m["Message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}
