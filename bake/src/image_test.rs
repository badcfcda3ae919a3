//! Boot-testing an image before it takes traffic (`bake test-image`, `bake build --test`,
//! `bake release --test`): one instance is launched from the image with the group's launch
//! template (its default version, the image overridden) in one of the group's subnets, but
//! outside the group, so no load balancer registers it and no lifecycle hook waits for it. It
//! carries the tag [`TEST_TAG`], whose value is the SSM parameter its agent reports to; with
//! instance metadata tags enabled, its `bake-agent` reads the tag, stays out of the group (no
//! hooks, no weekly job, no reaper) and, once the app is ready or never will be,
//! `bake-image-test.service` runs `bake-agent check --live --report`: units active, app running
//! and ready, secrets readable, EFS mounted and writable, the app's port in the firewall. bake
//! polls that parameter, tags the image [`TESTED_TAG`] `pass` or `fail` with the time
//! ([`TESTED_AT_TAG`]), terminates the instance and deletes the parameter, whatever the
//! outcome. `bake release` refuses an image not tagged `pass` unless `--untested`
//! (`image_test.required`).

use std::time::{Duration, Instant, SystemTime};

use aws_sdk_ec2::types::{
    HttpTokensState, Image, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceMetadataTagsState, LaunchTemplateSpecification, ResourceType, Tag, TagSpecification,
};
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::aws::Aws;
use crate::config::Settings;
use crate::targets::Targets;

/// The instance tag naming the SSM parameter the test instance's agent writes its report to.
pub const TEST_TAG: &str = "bake:image-test";
/// The image's verdict: `pass` or `fail`.
pub const TESTED_TAG: &str = "bake:tested";
/// When the verdict was reached (RFC 3339, UTC).
pub const TESTED_AT_TAG: &str = "bake:tested-at";
/// The instance that was tested.
pub const TESTED_INSTANCE_TAG: &str = "bake:tested-instance";
/// On a failed image: the checks that failed, or why there was no report.
pub const TESTED_FAILED_TAG: &str = "bake:tested-failed";

/// Errors of a boot test, before or after its verdict (a failed check is a verdict, not an
/// error).
#[derive(Debug, thiserror::Error)]
pub enum ImageTestError {
    /// An AWS call failed.
    #[error("{call} ({resource}): {message}")]
    Call {
        /// The API call.
        call: &'static str,
        /// What it was about.
        resource: String,
        /// The SDK's error with its context.
        message: String,
    },
    /// RunInstances answered without an instance.
    #[error("RunInstances of {ami} answered no instance")]
    NoInstance {
        /// The image.
        ami: String,
    },
    /// Interrupted (SIGINT, SIGTERM, SIGHUP): the test instance was terminated, the image is
    /// not tagged.
    #[error("interrupted: test instance {instance_id} terminated, {ami} not tagged")]
    Interrupted {
        /// The image.
        ami: String,
        /// The test instance.
        instance_id: String,
    },
}

pub(crate) fn call_err<E: std::error::Error + 'static>(
    call: &'static str,
    resource: impl Into<String>,
) -> impl FnOnce(E) -> ImageTestError {
    let resource = resource.into();
    move |e| ImageTestError::Call {
        call,
        resource,
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// One check of `bake-agent check --live`, as its report says it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    /// `units`, `app`, `readiness`, `secrets`, `efs`, `firewall`.
    pub name: String,
    /// It passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// The report the test instance's agent writes (`bake-agent check --live --report`,
/// docs/agent.md).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct AgentReport {
    /// 1.
    pub schema_version: u32,
    /// The instance that ran the checks.
    pub instance_id: String,
    /// The image it was launched from, as its metadata said.
    pub image_id: Option<String>,
    /// `pass` or `fail`.
    pub result: String,
    /// Each check.
    pub checks: Vec<Check>,
    /// When the checks ran (RFC 3339).
    pub at: String,
}

/// The outcome of a boot test, as printed (`--output json`: this document).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ImageTestReport {
    /// The image.
    pub image_id: String,
    /// `pass` or `fail`.
    pub result: String,
    /// Why it failed when no check says it (no report in time, the instance stopped, a report
    /// that cannot be read); `None` for a pass or a failed check.
    pub reason: Option<String>,
    /// The checks of the agent's report (empty without a report).
    pub checks: Vec<Check>,
    /// The test instance (`None` when an earlier verdict was taken, [`Self::reused`]).
    pub instance_id: Option<String>,
    /// The launch template and the version it was launched with.
    pub launch_template_id: String,
    /// Its version (the default one, the image overridden).
    pub launch_template_version: Option<i64>,
    /// The subnet, one of the group's (`None`: EC2's default).
    pub subnet_id: Option<String>,
    /// The SSM parameter the agent reported to (deleted afterwards).
    pub parameter: Option<String>,
    /// When the verdict was tagged (RFC 3339), or the earlier verdict's time.
    pub tested_at: Option<String>,
    /// Seconds from launch to verdict.
    pub elapsed_s: f64,
    /// The image was tagged `bake:tested=pass` already: not tested again.
    pub reused: bool,
}

impl ImageTestReport {
    /// Whether the image passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.result == "pass"
    }
}

/// What an image's tags say of its boot test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tested {
    /// Never tested (no `bake:tested` tag).
    Untested,
    /// Passed at the time given.
    Pass {
        /// `bake:tested-at`.
        at: Option<String>,
    },
    /// Failed (or any other value) at the time given, with what failed.
    Fail {
        /// `bake:tested-at`.
        at: Option<String>,
        /// `bake:tested-failed`.
        failed: Option<String>,
    },
}

impl Tested {
    /// Reads the image's tags.
    #[must_use]
    pub fn of(image: &Image) -> Self {
        let tag = |k| crate::ami::tag(image, k).map(str::to_owned);
        match tag(TESTED_TAG).as_deref() {
            None => Self::Untested,
            Some("pass") => Self::Pass {
                at: tag(TESTED_AT_TAG),
            },
            Some(_) => Self::Fail {
                at: tag(TESTED_AT_TAG),
                failed: tag(TESTED_FAILED_TAG),
            },
        }
    }

    /// The sentence for a refusal or the plan: "never boot-tested", "failed its boot test at …
    /// (readiness)".
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Untested => "was never boot-tested".to_owned(),
            Self::Pass { at } => format!("passed its boot test{}", at_text(at.as_deref())),
            Self::Fail { at, failed } => format!(
                "failed its boot test{}{}",
                at_text(at.as_deref()),
                failed
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            ),
        }
    }
}

fn at_text(at: Option<&str>) -> String {
    at.map(|a| format!(" at {a}")).unwrap_or_default()
}

/// The verdict of an agent's report for `instance_id`: (result, reason). A report from another
/// instance, of another schema, or whose result disagrees with its checks is a failure.
#[must_use]
pub fn judge(report: &AgentReport, instance_id: &str) -> (bool, Option<String>) {
    if report.schema_version != 1 {
        return (
            false,
            Some(format!(
                "report of schema_version {}, this bake reads 1",
                report.schema_version
            )),
        );
    }
    if report.instance_id != instance_id {
        return (
            false,
            Some(format!(
                "the report is from {}, not from the test instance {instance_id}",
                report.instance_id
            )),
        );
    }
    if report.checks.is_empty() {
        return (false, Some("the report has no checks".to_owned()));
    }
    let all_ok = report.checks.iter().all(|c| c.ok);
    match (report.result.as_str(), all_ok) {
        ("pass", true) => (true, None),
        ("fail", false) => (false, None),
        (r, _) => (
            false,
            Some(format!(
                "the report says {r:?} but its checks say {}",
                if all_ok { "pass" } else { "fail" }
            )),
        ),
    }
}

/// `2026-12-03T07:15:00Z` → `20261203T071500Z` (SSM names allow no ':').
pub(crate) fn compact(rfc3339: &str) -> String {
    rfc3339
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect()
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The subnets of the group (`VPCZoneIdentifier`, comma-separated).
#[must_use]
pub fn group_subnets(vpc_zone_identifier: Option<&str>) -> Vec<String> {
    vpc_zone_identifier
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Boot-tests `ami` on one instance outside group `t` (or takes its earlier `pass`): see the
/// module's comment. `timeout` overrides `image_test.timeout`. A failed check is a report
/// whose `result` is `fail`, not an error.
///
/// # Errors
/// `image_test.parameter_prefix` is missing; an AWS call failed (after the instance was
/// launched: it is terminated first, as far as AWS lets it); interrupted.
pub async fn test_image(
    aws: &Aws,
    settings: &Settings,
    t: &Targets,
    ami: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<ImageTestReport> {
    let prefix = settings.image_test_prefix()?.to_owned();
    let image = crate::ami::describe(&aws.ec2, ami).await?;
    let lt = t.launch_template_id.clone();
    if let Tested::Pass { at } = Tested::of(&image) {
        tracing::info!(
            "{ami} passed its boot test{} already: not tested again",
            at_text(at.as_deref())
        );
        return Ok(ImageTestReport {
            image_id: ami.to_owned(),
            result: "pass".to_owned(),
            launch_template_id: lt,
            tested_at: at,
            reused: true,
            ..ImageTestReport::default()
        });
    }
    let started = now_rfc3339();
    let parameter = format!("{prefix}/{ami}/{}", compact(&started));
    let timeout = timeout.unwrap_or(settings.image_test.timeout);
    let t0 = Instant::now();
    let launched = launch_outside_group(
        aws,
        t,
        ami,
        (TEST_TAG, &parameter),
        &format!("bake image test of {ami}"),
    )
    .await?;
    let (instance_id, version, subnet) = (
        launched.instance_id.clone(),
        launched.launch_template_version,
        launched.subnet_id.clone(),
    );
    tracing::info!(
        "launched test instance {instance_id} of {ami} (launch template {lt} version {version}, subnet {}, outside '{}'); waiting up to {} for its report at {parameter}",
        subnet.as_deref().unwrap_or("EC2's default"),
        t.auto_scaling_group,
        humantime::format_duration(timeout)
    );

    let waited = wait_for_report(aws, settings, ami, &instance_id, &parameter, timeout).await;
    // Whatever happened: the instance and its parameter go.
    let cleaned = clean_up(aws, &instance_id, &parameter).await;
    let (agent, reason) = match waited {
        Ok(w) => w,
        Err(e) => {
            if let Err(c) = cleaned {
                tracing::error!("{c}");
            }
            return Err(e.into());
        }
    };
    cleaned?;
    let (passed, reason) = match (&agent, reason) {
        (_, Some(r)) => (false, Some(r)),
        (Some(a), None) => judge(a, &instance_id),
        (None, None) => (false, Some("no report".to_owned())),
    };
    let checks = agent.map(|a| a.checks).unwrap_or_default();
    let tested_at = now_rfc3339();
    let failed = if passed {
        None
    } else {
        let names: Vec<&str> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        Some(if names.is_empty() {
            reason.clone().unwrap_or_else(|| "no report".to_owned())
        } else {
            names.join(",")
        })
    };
    let result = if passed { "pass" } else { "fail" };
    let mut tags = vec![
        (TESTED_TAG, result.to_owned()),
        (TESTED_AT_TAG, tested_at.clone()),
        (TESTED_INSTANCE_TAG, instance_id.clone()),
    ];
    if let Some(f) = &failed {
        // A tag value has at most 256 characters.
        tags.push((TESTED_FAILED_TAG, f.chars().take(256).collect()));
    }
    let mut req = aws.ec2.create_tags().resources(ami);
    for (k, v) in &tags {
        req = req.tags(Tag::builder().key(*k).value(v).build());
    }
    if passed {
        // A `pass` replaces an earlier `fail`: its failed checks go with it.
        aws.ec2
            .delete_tags()
            .resources(ami)
            .tags(Tag::builder().key(TESTED_FAILED_TAG).build())
            .send()
            .await
            .map_err(call_err("DeleteTags", ami))?;
    }
    req.send().await.map_err(call_err("CreateTags", ami))?;
    tracing::info!("{ami} tagged {TESTED_TAG}={result}");
    Ok(ImageTestReport {
        image_id: ami.to_owned(),
        result: result.to_owned(),
        reason,
        checks,
        instance_id: Some(instance_id),
        launch_template_id: lt,
        launch_template_version: Some(version),
        subnet_id: subnet,
        parameter: Some(parameter),
        tested_at: Some(tested_at),
        elapsed_s: (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        reused: false,
    })
}

/// Polls `parameter` (and the instance's state) until the agent's report is there, the instance
/// stopped, or `timeout`: (the report, why there is none or it cannot be read).
async fn wait_for_report(
    aws: &Aws,
    settings: &Settings,
    ami: &str,
    instance_id: &str,
    parameter: &str,
    timeout: Duration,
) -> Result<(Option<AgentReport>, Option<String>), ImageTestError> {
    let deadline = Instant::now() + timeout;
    let mut interval = settings.refresh.poll_interval;
    let mut last_state = String::new();
    loop {
        if crate::signals::received() > 0 {
            return Err(ImageTestError::Interrupted {
                ami: ami.to_owned(),
                instance_id: instance_id.to_owned(),
            });
        }
        match aws.ssm.get_parameter().name(parameter).send().await {
            Ok(out) => {
                let text = out
                    .parameter()
                    .and_then(|p| p.value())
                    .unwrap_or_default()
                    .to_owned();
                return Ok(match serde_json::from_str::<AgentReport>(&text) {
                    Ok(r) => (Some(r), None),
                    Err(e) => (None, Some(format!("the report cannot be read: {e}"))),
                });
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(aws_sdk_ssm::operation::get_parameter::GetParameterError::is_parameter_not_found) => {}
            Err(e) => return Err(call_err("GetParameter", parameter)(e)),
        }
        let (state, why) = instance_state(aws, instance_id).await?;
        if state != last_state {
            tracing::info!("test instance {instance_id}: {state}");
            last_state.clone_from(&state);
        }
        if is_gone(&state) {
            return Ok((
                None,
                Some(format!(
                    "the test instance went {state} before it reported{}",
                    why.map(|m| format!(" ({m})")).unwrap_or_default()
                )),
            ));
        }
        if Instant::now() >= deadline {
            return Ok((
                None,
                Some(format!(
                    "no report within {} (image_test.timeout)",
                    humantime::format_duration(timeout)
                )),
            ));
        }
        tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
        interval = (interval * 3 / 2).min(settings.refresh.max_poll_interval);
    }
}

/// An instance bake launched outside the group ([`launch_outside_group`]).
#[derive(Clone, Debug)]
pub struct OutsideInstance {
    /// The instance.
    pub instance_id: String,
    /// The launch template version it was launched with (the default one, the image
    /// overridden).
    pub launch_template_version: i64,
    /// Its subnet, the first of the group's (`None`: EC2's default).
    pub subnet_id: Option<String>,
}

/// Launches one instance of `ami` as the group of `t` would, but outside it: the group's launch
/// template at its default version with the image overridden, in the group's first subnet,
/// IMDSv2 with instance metadata tags, and the instance tag `tag` (key, value) by which its
/// agent knows what it is there for (a boot test, [`TEST_TAG`]; a migration,
/// [`crate::migrate::MIGRATE_TAG`]). No load balancer registers it and no lifecycle hook waits
/// for it.
///
/// # Errors
/// Describing the group or the template, or RunInstances, failed.
pub async fn launch_outside_group(
    aws: &Aws,
    t: &Targets,
    ami: &str,
    tag: (&str, &str),
    name: &str,
) -> anyhow::Result<OutsideInstance> {
    let lt = &t.launch_template_id;
    let group = crate::targets::describe_group(aws, &t.auto_scaling_group).await?;
    let subnet = group_subnets(group.vpc_zone_identifier())
        .into_iter()
        .next();
    let (version, _) = crate::launch_template::versions(aws, lt).await?;
    let mut run = aws
        .ec2
        .run_instances()
        .image_id(ami)
        .min_count(1)
        .max_count(1)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(lt)
                .version(version.to_string())
                .build(),
        )
        // Tags in the metadata are how the agent learns what the instance is for; IMDSv2 as the
        // fleet's template has it (these options replace the template's).
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .http_tokens(HttpTokensState::Required)
                .instance_metadata_tags(InstanceMetadataTagsState::Enabled)
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key(tag.0).value(tag.1).build())
                .tags(Tag::builder().key("Name").value(name).build())
                .build(),
        );
    if let Some(s) = &subnet {
        run = run.subnet_id(s);
    }
    let out = run.send().await.map_err(call_err(
        "RunInstances",
        format!("{ami}, launch template {lt} version {version}"),
    ))?;
    let instance_id = out
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .ok_or_else(|| ImageTestError::NoInstance {
            ami: ami.to_owned(),
        })?
        .to_owned();
    Ok(OutsideInstance {
        instance_id,
        launch_template_version: version,
        subnet_id: subnet,
    })
}

/// The instance's state name (`pending`, `running`, `terminated`, …; empty when EC2 does not
/// know it) and EC2's reason for it.
///
/// # Errors
/// DescribeInstances failed.
pub async fn instance_state(
    aws: &Aws,
    instance_id: &str,
) -> Result<(String, Option<String>), ImageTestError> {
    let out = aws
        .ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(call_err("DescribeInstances", instance_id))?;
    let inst = out.reservations().iter().flat_map(|r| r.instances()).next();
    let state = inst
        .and_then(|i| i.state())
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default();
    let why = inst
        .and_then(|i| i.state_reason())
        .and_then(|r| r.message())
        .map(ToOwned::to_owned);
    Ok((state, why))
}

/// Whether an instance in `state` is gone or going (it will report nothing any more).
#[must_use]
pub fn is_gone(state: &str) -> bool {
    matches!(
        state,
        "shutting-down" | "terminated" | "stopping" | "stopped"
    )
}

/// TerminateInstances of an instance bake launched outside the group.
///
/// # Errors
/// TerminateInstances failed.
pub async fn terminate(aws: &Aws, instance_id: &str) -> Result<(), ImageTestError> {
    aws.ec2
        .terminate_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(call_err("TerminateInstances", instance_id))?;
    Ok(())
}

/// Terminates the test instance and deletes its report parameter (a parameter never written is
/// no error).
async fn clean_up(aws: &Aws, instance_id: &str, parameter: &str) -> Result<(), ImageTestError> {
    terminate(aws, instance_id).await?;
    tracing::info!("test instance {instance_id} terminated");
    match aws.ssm.delete_parameter().name(parameter).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error().is_some_and(
                aws_sdk_ssm::operation::delete_parameter::DeleteParameterError::is_parameter_not_found,
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(call_err("DeleteParameter", parameter)(e)),
    }
}

/// The text of a test's outcome: one line per check, then the verdict.
#[must_use]
pub fn render(r: &ImageTestReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if r.reused {
        let _ = writeln!(
            s,
            "{}: pass (tested before{}; not tested again)",
            r.image_id,
            at_text(r.tested_at.as_deref())
        );
        return s;
    }
    for c in &r.checks {
        let _ = writeln!(
            s,
            "  {} {:<10} {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let _ = write!(
        s,
        "{}: {} on {} in {:.1}s",
        r.image_id,
        r.result,
        r.instance_id.as_deref().unwrap_or("-"),
        r.elapsed_s
    );
    if let Some(reason) = &r.reason {
        let _ = write!(s, " ({reason})");
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(result: &str, oks: &[bool]) -> AgentReport {
        AgentReport {
            schema_version: 1,
            instance_id: "i-1".into(),
            image_id: Some("ami-1".into()),
            result: result.into(),
            checks: oks
                .iter()
                .enumerate()
                .map(|(n, ok)| Check {
                    name: format!("c{n}"),
                    ok: *ok,
                    detail: String::new(),
                })
                .collect(),
            at: "2026-12-03T07:15:00Z".into(),
        }
    }

    #[test]
    fn test_judge_takes_a_report_only_from_the_test_instance_and_consistent() {
        assert_eq!(judge(&report("pass", &[true, true]), "i-1"), (true, None));
        assert_eq!(judge(&report("fail", &[true, false]), "i-1"), (false, None));
        let (ok, why) = judge(&report("pass", &[true]), "i-2");
        assert!(!ok);
        assert!(why.unwrap().contains("not from the test instance i-2"));
        let (ok, why) = judge(&report("pass", &[true, false]), "i-1");
        assert!(!ok);
        assert!(why.unwrap().contains("its checks say fail"));
        let (ok, why) = judge(&report("pass", &[]), "i-1");
        assert!(!ok);
        assert!(why.unwrap().contains("no checks"));
        let mut r = report("pass", &[true]);
        r.schema_version = 2;
        assert!(!judge(&r, "i-1").0);
    }

    #[test]
    fn test_the_agents_report_document_parses() {
        let text = r#"{"schema_version":1,"instance_id":"i-0abc","image_id":null,"result":"fail",
            "checks":[{"name":"units","ok":true,"detail":"4 active"},
                      {"name":"readiness","ok":false,"detail":"never ready"}],
            "at":"2026-12-03T07:15:00Z"}"#;
        let r: AgentReport = serde_json::from_str(text).unwrap();
        assert_eq!(r.checks.len(), 2);
        assert_eq!(judge(&r, "i-0abc"), (false, None));
    }

    #[test]
    fn test_names_and_subnets() {
        assert_eq!(compact("2026-12-03T07:15:00Z"), "20261203T071500Z");
        assert!(crate::image_parameter::check_name(&format!(
            "/bake/prod/image-tests/ami-0abc/{}",
            compact(&now_rfc3339())
        ))
        .is_ok());
        assert_eq!(
            group_subnets(Some("subnet-a, subnet-b,")),
            vec!["subnet-a".to_owned(), "subnet-b".to_owned()]
        );
        assert!(group_subnets(None).is_empty());
    }

    #[test]
    fn test_render_names_each_check_and_the_reason() {
        let r = ImageTestReport {
            image_id: "ami-1".into(),
            result: "fail".into(),
            reason: Some("no report within 20m".into()),
            checks: vec![Check {
                name: "firewall".into(),
                ok: false,
                detail: "port 8080 not in app_ports".into(),
            }],
            instance_id: Some("i-1".into()),
            elapsed_s: 12.34,
            ..ImageTestReport::default()
        };
        let text = render(&r);
        assert!(text.contains("FAIL firewall"), "{text}");
        assert!(
            text.contains("ami-1: fail on i-1 in 12.3s (no report within 20m)"),
            "{text}"
        );
    }

    #[test]
    fn test_tested_describes_the_tags() {
        let image = |tags: &[(&str, &str)]| {
            let mut b = Image::builder().image_id("ami-1");
            for (k, v) in tags {
                b = b.tags(Tag::builder().key(*k).value(*v).build());
            }
            b.build()
        };
        assert_eq!(Tested::of(&image(&[])), Tested::Untested);
        assert_eq!(
            Tested::of(&image(&[(TESTED_TAG, "pass"), (TESTED_AT_TAG, "t")])),
            Tested::Pass {
                at: Some("t".into())
            }
        );
        let failed = Tested::of(&image(&[
            (TESTED_TAG, "fail"),
            (TESTED_FAILED_TAG, "readiness"),
        ]));
        assert_eq!(failed.describe(), "failed its boot test (readiness)");
        assert_eq!(Tested::Untested.describe(), "was never boot-tested");
    }
}
