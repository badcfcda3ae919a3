//! Drift (`bake status`, `bake status --check`): the places that say which image the fleet runs,
//! side by side — the fleet stack's image parameter (`target.image_parameter`, the SSM
//! parameter its `ImageParameter` resolves), the launch template's default version, the version
//! the group launches from, and the images its instances were launched from — and every place
//! that disagrees with the launch template's default version, which `bake release` and
//! `bake rollback` set.
//!
//! While an instance refresh is in progress, instances on another image are the rollout itself,
//! not drift: they are listed but not flagged.

use std::collections::BTreeMap;

use aws_sdk_ssm::operation::get_parameter::GetParameterError;

use crate::aws::Aws;
use crate::status::{Fleet, StatusError};

/// Where the fleet's image is written down, and what disagrees.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    /// `target.image_parameter`, when configured.
    pub image_parameter: Option<String>,
    /// Its value (`None`: not configured, or the parameter does not exist).
    pub parameter_image: Option<String>,
    /// The launch template's default version.
    pub default_version: i64,
    /// Its image (`None`: the version names none).
    pub default_image: Option<String>,
    /// The version the group launches from as configured: `$Default`, `$Latest` or a number.
    pub group_version: Option<String>,
    /// The image of that version.
    pub group_image: Option<String>,
    /// The images the group's instances were launched from: image → instances.
    pub instance_images: BTreeMap<String, usize>,
    /// An instance refresh is in progress (instances on other images are not flagged).
    pub refresh_in_progress: bool,
    /// Each disagreement, one sentence each; empty: none.
    pub disagreements: Vec<String>,
}

impl Drift {
    /// Whether anything disagrees.
    #[must_use]
    pub fn drifted(&self) -> bool {
        !self.disagreements.is_empty()
    }
}

/// Reads what `fleet` does not hold already (the launch template's images, the parameter) and
/// compares.
pub async fn read(
    aws: &Aws,
    fleet: &Fleet,
    image_parameter: Option<&str>,
) -> anyhow::Result<Drift> {
    let images = crate::launch_template::images(aws, &fleet.targets.launch_template_id).await?;
    let parameter_image = match image_parameter {
        None => None,
        Some(name) => match aws.ssm.get_parameter().name(name).send().await {
            Ok(out) => out
                .parameter()
                .and_then(|p| p.value())
                .map(ToOwned::to_owned),
            Err(e)
                if e.as_service_error()
                    .is_some_and(GetParameterError::is_parameter_not_found) =>
            {
                None
            }
            Err(e) => {
                return Err(StatusError::GetImageParameter {
                    name: name.to_owned(),
                    source: Box::new(e),
                }
                .into())
            }
        },
    };
    let mut instance_images = BTreeMap::new();
    for i in &fleet.instances {
        if let Some(ami) = &i.image_id {
            *instance_images.entry(ami.clone()).or_insert(0) += 1;
        }
    }
    let in_progress = fleet.refresh.as_ref().is_some_and(|r| {
        matches!(
            r.status.as_str(),
            "Pending" | "InProgress" | "Cancelling" | "RollbackInProgress" | "Baking"
        )
    });
    Ok(compare(Drift {
        image_parameter: image_parameter.map(ToOwned::to_owned),
        parameter_image,
        default_version: fleet.default_version,
        default_image: images.get(&fleet.default_version).cloned(),
        group_image: fleet
            .group_version
            .as_deref()
            .and_then(|v| resolve(v, fleet.default_version, fleet.latest_version))
            .and_then(|v| images.get(&v).cloned()),
        group_version: fleet.group_version.clone(),
        instance_images,
        refresh_in_progress: in_progress,
        disagreements: Vec::new(),
    }))
}

/// The version number `version` (`$Default`, `$Latest` or a number) names.
fn resolve(version: &str, default: i64, latest: i64) -> Option<i64> {
    match version {
        "$Default" => Some(default),
        "$Latest" => Some(latest),
        n => n.parse().ok(),
    }
}

/// `d` with its disagreements with the launch template's default version filled in.
#[must_use]
pub fn compare(mut d: Drift) -> Drift {
    let mut out = Vec::new();
    let reference = d.default_image.clone();
    let default = format!(
        "the launch template's default version {} ({})",
        d.default_version,
        reference.as_deref().unwrap_or("no image")
    );
    if let Some(name) = &d.image_parameter {
        match &d.parameter_image {
            None => out.push(format!(
                "the image parameter {name} does not exist: the fleet stack cannot resolve its \
                 image (bake release writes it after a successful refresh)"
            )),
            Some(p) if Some(p) != reference.as_ref() => out.push(format!(
                "the image parameter {name} names {p}, {default} another: a stack update would \
                 launch {p}"
            )),
            Some(_) => {}
        }
    }
    match (&d.group_version, &d.group_image) {
        (Some(v), img) if img != &reference => out.push(format!(
            "the group launches version {v} ({}), not {default}",
            img.as_deref().unwrap_or("no image")
        )),
        _ => {}
    }
    if !d.refresh_in_progress {
        for (ami, n) in &d.instance_images {
            if Some(ami) != reference.as_ref() {
                let noun = if *n == 1 {
                    "instance runs"
                } else {
                    "instances run"
                };
                out.push(format!("{n} {noun} {ami}, not {default}"));
            }
        }
    }
    d.disagreements = out;
    d
}

/// The drift as text: where the image is written down, and each disagreement.
#[must_use]
pub fn render(d: &Drift) -> String {
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let mut s = String::from("image:\n");
    if let Some(name) = &d.image_parameter {
        s.push_str(&format!(
            "  image parameter {name}: {}\n",
            d.parameter_image.as_deref().unwrap_or("(does not exist)")
        ));
    }
    s.push_str(&format!(
        "  launch template default v{}: {}\n",
        d.default_version,
        or(&d.default_image)
    ));
    s.push_str(&format!(
        "  group launches {}: {}\n",
        or(&d.group_version),
        or(&d.group_image)
    ));
    let running: Vec<String> = d
        .instance_images
        .iter()
        .map(|(ami, n)| format!("{ami} ×{n}"))
        .collect();
    s.push_str(&format!(
        "  instances: {}{}\n",
        if running.is_empty() {
            "none".to_owned()
        } else {
            running.join(", ")
        },
        if d.refresh_in_progress {
            " (instance refresh in progress)"
        } else {
            ""
        }
    ));
    if d.disagreements.is_empty() {
        s.push_str("no drift\n");
    } else {
        for line in &d.disagreements {
            s.push_str(&format!("drift: {line}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed() -> Drift {
        Drift {
            image_parameter: Some("/bake/prod/image-id".into()),
            parameter_image: Some("ami-2".into()),
            default_version: 2,
            default_image: Some("ami-2".into()),
            group_version: Some("2".into()),
            group_image: Some("ami-2".into()),
            instance_images: BTreeMap::from([("ami-2".into(), 3)]),
            refresh_in_progress: false,
            disagreements: Vec::new(),
        }
    }

    #[test]
    fn test_no_drift_when_every_place_names_the_default_image() {
        let d = compare(agreed());
        assert!(!d.drifted(), "{:?}", d.disagreements);
        assert!(render(&d).ends_with("no drift\n"), "{}", render(&d));
    }

    #[test]
    fn test_each_disagreement_is_named() {
        let mut d = agreed();
        d.parameter_image = Some("ami-1".into());
        d.group_version = Some("1".into());
        d.group_image = Some("ami-1".into());
        d.instance_images = BTreeMap::from([("ami-1".into(), 1), ("ami-2".into(), 2)]);
        let d = compare(d);
        assert_eq!(d.disagreements.len(), 3, "{:?}", d.disagreements);
        assert!(d.disagreements[0].contains("/bake/prod/image-id names ami-1"));
        assert!(d.disagreements[0].contains("a stack update would launch ami-1"));
        assert!(d.disagreements[1].starts_with("the group launches version 1 (ami-1)"));
        assert_eq!(
            d.disagreements[2],
            "1 instance runs ami-1, not the launch template's default version 2 (ami-2)"
        );
        let text = render(&d);
        assert_eq!(text.matches("drift: ").count(), 3, "{text}");
        assert!(text.contains("  instances: ami-1 ×1, ami-2 ×2\n"), "{text}");
    }

    #[test]
    fn test_a_missing_parameter_is_drift_and_a_rollout_is_not() {
        let mut d = agreed();
        d.parameter_image = None;
        d.instance_images = BTreeMap::from([("ami-1".into(), 1), ("ami-2".into(), 2)]);
        d.refresh_in_progress = true;
        let d = compare(d);
        assert_eq!(d.disagreements.len(), 1, "{:?}", d.disagreements);
        assert!(d.disagreements[0].contains("does not exist"));
        assert!(render(&d).contains("(instance refresh in progress)"));
    }

    #[test]
    fn test_versions_resolve_as_auto_scaling_reads_them() {
        assert_eq!(resolve("$Default", 3, 5), Some(3));
        assert_eq!(resolve("$Latest", 3, 5), Some(5));
        assert_eq!(resolve("4", 3, 5), Some(4));
        assert_eq!(resolve("x", 3, 5), None);
    }
}
