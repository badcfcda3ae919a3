//! The emulator answers the SDK calls the binaries make, with each test's state its own.

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
use aws_sdk_ssm::types::ParameterType;
use bake_e2e::Emulator;

/// An image moto knows out of the box (its bundled AMI list).
async fn any_image(aws: &bake_e2e::Aws) -> String {
    let images = aws
        .ec2
        .describe_images()
        .send()
        .await
        .expect("DescribeImages");
    images
        .images()
        .iter()
        .find_map(|i| i.image_id().map(str::to_owned))
        .expect("moto ships default AMIs")
}

#[tokio::test(flavor = "multi_thread")]
async fn test_emulators_do_not_share_state() {
    let a = Emulator::start().unwrap();
    let b = Emulator::start().unwrap();
    assert_ne!(a.url(), b.url());
    let (aws_a, aws_b) = (a.aws().await, b.aws().await);
    aws_a
        .ssm
        .put_parameter()
        .name("/isolation/probe")
        .value("a")
        .r#type(ParameterType::String)
        .send()
        .await
        .unwrap();
    let seen_a = aws_a.ssm.describe_parameters().send().await.unwrap();
    let seen_b = aws_b.ssm.describe_parameters().send().await.unwrap();
    assert_eq!(seen_a.parameters().len(), 1);
    assert!(seen_b.parameters().is_empty(), "{:?}", seen_b.parameters());
}

#[tokio::test(flavor = "multi_thread")]
async fn test_launch_template_and_auto_scaling_group() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    let image = any_image(&aws).await;
    let lt = aws
        .ec2
        .create_launch_template()
        .launch_template_name("e2e-web")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&image)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::LaunchTemplate)
                .tags(Tag::builder().key("app").value("e2e").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let lt_id = lt
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .unwrap()
        .to_owned();
    aws.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name("e2e-web")
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(&lt_id)
                .version("$Default")
                .build(),
        )
        .min_size(2)
        .max_size(4)
        .desired_capacity(2)
        .availability_zones("us-east-1a")
        .availability_zones("us-east-1b")
        .send()
        .await
        .unwrap();
    let groups = aws
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("e2e-web")
        .send()
        .await
        .unwrap();
    let group = &groups.auto_scaling_groups()[0];
    assert_eq!(group.instances().len(), 2);
    let ids: Vec<String> = group
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    // The ASG's instances are real EC2 instances of the emulator, on the template's image.
    let reservations = aws
        .ec2
        .describe_instances()
        .set_instance_ids(Some(ids.clone()))
        .send()
        .await
        .unwrap();
    let images: Vec<&str> = reservations
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.image_id())
        .collect();
    assert_eq!(images, vec![image.as_str(); 2]);

    // A new default version is what the next launch uses.
    aws.ec2
        .create_launch_template_version()
        .launch_template_id(&lt_id)
        .source_version("1")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&image)
                .build(),
        )
        .send()
        .await
        .unwrap();
    aws.ec2
        .modify_launch_template()
        .launch_template_id(&lt_id)
        .default_version("2")
        .send()
        .await
        .unwrap();
    let lts = aws
        .ec2
        .describe_launch_templates()
        .launch_template_ids(&lt_id)
        .send()
        .await
        .unwrap();
    assert_eq!(lts.launch_templates()[0].default_version_number(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn test_ssm_parameters_by_path_decrypted_and_paginated() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    for i in 0..7 {
        aws.ssm
            .put_parameter()
            .name(format!("/app/prod/svc{i}/password"))
            .value(format!("secret-{i}"))
            .r#type(ParameterType::SecureString)
            .send()
            .await
            .unwrap();
    }
    aws.ssm
        .put_parameter()
        .name("/other/x")
        .value("no")
        .r#type(ParameterType::String)
        .send()
        .await
        .unwrap();
    let mut values = Vec::new();
    let mut pages = 0;
    let mut stream = aws
        .ssm
        .get_parameters_by_path()
        .path("/app/prod")
        .recursive(true)
        .with_decryption(true)
        .max_results(3)
        .into_paginator()
        .send();
    while let Some(page) = stream.next().await {
        pages += 1;
        for p in page.unwrap().parameters() {
            values.push(p.value().unwrap_or_default().to_owned());
        }
    }
    values.sort();
    assert_eq!(
        values,
        (0..7).map(|i| format!("secret-{i}")).collect::<Vec<_>>()
    );
    assert!(
        pages >= 3,
        "7 parameters at 3 a page take 3 pages, got {pages}"
    );

    // Create-only PutParameter: the fleet lease primitive.
    let second = aws
        .ssm
        .put_parameter()
        .name("/app/prod/svc0/password")
        .value("again")
        .r#type(ParameterType::SecureString)
        .overwrite(false)
        .send()
        .await
        .unwrap_err();
    let second = second.into_service_error();
    assert!(second.is_parameter_already_exists(), "{second:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_cloudwatch_logs_round_trip() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    aws.logs
        .create_log_group()
        .log_group_name("/bake/e2e")
        .send()
        .await
        .unwrap();
    aws.logs
        .put_retention_policy()
        .log_group_name("/bake/e2e")
        .retention_in_days(7)
        .send()
        .await
        .unwrap();
    aws.logs
        .create_log_stream()
        .log_group_name("/bake/e2e")
        .log_stream_name("i-123/app")
        .send()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let now = i64::try_from(now).unwrap();
    let events: Vec<InputLogEvent> = (0..50)
        .map(|i| {
            InputLogEvent::builder()
                .timestamp(now + i)
                .message(format!("line {i}"))
                .build()
                .unwrap()
        })
        .collect();
    aws.logs
        .put_log_events()
        .log_group_name("/bake/e2e")
        .log_stream_name("i-123/app")
        .set_log_events(Some(events))
        .send()
        .await
        .unwrap();
    let got = aws
        .logs
        .get_log_events()
        .log_group_name("/bake/e2e")
        .log_stream_name("i-123/app")
        .start_from_head(true)
        .send()
        .await
        .unwrap();
    let messages: Vec<&str> = got.events().iter().filter_map(|e| e.message()).collect();
    assert_eq!(messages.len(), 50);
    assert_eq!(messages[0], "line 0");
    assert_eq!(messages[49], "line 49");
    let groups = aws.logs.describe_log_groups().send().await.unwrap();
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(7));
}

#[tokio::test(flavor = "multi_thread")]
async fn test_cloudformation_stack_outputs() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    let template = r#"{
      "Resources": {
        "Param": {"Type": "AWS::SSM::Parameter",
                  "Properties": {"Name": "/bake/e2e/cfn", "Type": "String", "Value": "v"}}
      },
      "Outputs": {"ParamName": {"Value": {"Ref": "Param"}}}
    }"#;
    aws.cfn
        .create_stack()
        .stack_name("e2e-stack")
        .template_body(template)
        .send()
        .await
        .unwrap();
    let stacks = aws
        .cfn
        .describe_stacks()
        .stack_name("e2e-stack")
        .send()
        .await
        .unwrap();
    let outputs = stacks.stacks()[0].outputs();
    assert_eq!(outputs[0].output_key(), Some("ParamName"));
    assert_eq!(outputs[0].output_value(), Some("/bake/e2e/cfn"));
    let missing = aws
        .cfn
        .describe_stacks()
        .stack_name("no-such-stack")
        .send()
        .await;
    assert!(missing.is_err());
}

/// With IAM enforced (`Emulator::enforce_iam`) the harness signs as its administrator and may do
/// anything; the dummy key is refused; an instance of iam.yaml's profile gets its role's
/// credentials, which read the environment's secrets and nothing else, as on AWS.
#[tokio::test(flavor = "multi_thread")]
async fn test_iam_enforced_holds_each_identity_to_its_policies() {
    let emu = Emulator::start().unwrap();
    let ids = bake_e2e::iam::deploy(&emu.aws().await, "iamt")
        .await
        .expect("network, data and iam stacks deploy");
    assert!(ids
        .instance_profile_arn
        .ends_with(":instance-profile/bake-iamt-instance"));
    emu.enforce_iam().await.unwrap();
    assert!(emu.iam_enforced());
    let admin = emu.aws().await;
    for name in ["/bake/iamt/app/db/connection-string", "/bake/other/app/db"] {
        admin
            .ssm
            .put_parameter()
            .name(name)
            .value("s3cret")
            .r#type(ParameterType::SecureString)
            .send()
            .await
            .unwrap_or_else(|e| panic!("the administrator puts {name}: {e:?}"));
    }
    // The administrator's EC2 query calls are signed as the emulator checks them.
    let ami = any_image(&admin).await;
    admin
        .ec2
        .create_tags()
        .resources(&ami)
        .tags(
            Tag::builder()
                .key("bake:built-at")
                .value("2026-12-01T23:28:14Z")
                .build(),
        )
        .tags(
            Tag::builder()
                .key("bake:local-image")
                .value("/work/.work/images/a b+c")
                .build(),
        )
        .send()
        .await
        .expect("the administrator tags an image");

    // The dummy key no longer passes.
    let settings = emu.settings();
    let dummy = bake_e2e::emulator::clients(
        &settings,
        aws_credential_types::Credentials::new("testing", "testing", None, None, "t"),
    )
    .await;
    let e = dummy.ssm.describe_parameters().send().await.unwrap_err();
    assert!(format!("{e:?}").contains("InvalidClientTokenId"), "{e:?}");

    // The instance role: its environment's secrets, decrypted; not another environment's.
    let creds = emu
        .role_credentials(&ids.instance_profile_arn, "i-0123456789abcdef0")
        .unwrap();
    assert_eq!(creds.role_name, "bake-iamt-instance");
    let role = bake_e2e::emulator::clients(
        &settings,
        aws_credential_types::Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.clone(),
            Some(creds.token.clone()),
            None,
            "role",
        ),
    )
    .await;
    let mine = role
        .ssm
        .get_parameters_by_path()
        .path("/bake/iamt/app")
        .recursive(true)
        .with_decryption(true)
        .send()
        .await
        .expect("the instance role reads its environment's secrets");
    assert_eq!(mine.parameters().len(), 1);
    assert_eq!(mine.parameters()[0].value(), Some("s3cret"));
    let theirs = role
        .ssm
        .get_parameters_by_path()
        .path("/bake/other/app")
        .recursive(true)
        .send()
        .await
        .unwrap_err();
    assert!(format!("{theirs:?}").contains("AccessDenied"), "{theirs:?}");
    // Nor may it change the group's launch template (the release role's business).
    let lt = role
        .ec2
        .describe_launch_templates()
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{lt:?}").contains("UnauthorizedOperation"),
        "{lt:?}"
    );
}
