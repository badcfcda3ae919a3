//! `bake prune`: never an AMI in use, never the newest K, never what `bake rollback` needs;
//! the others retired in stages (deprecate, disable, deregister), restored when needed again.

use std::time::Duration;

use crate::util::World;

/// The `kept_because` of `ami` in a prune's JSON (`None`: deleted).
fn kept_because(plan: &serde_json::Value, ami: &str) -> Option<String> {
    plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == ami)
        .unwrap_or_else(|| panic!("{ami} not in {plan}"))["kept_because"]
        .as_str()
        .map(ToOwned::to_owned)
}

/// The `steps` of `ami` in a prune's JSON.
fn steps(plan: &serde_json::Value, ami: &str) -> Vec<String> {
    plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == ami)
        .unwrap_or_else(|| panic!("{ami} not in {plan}"))["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Every stage in one run: both delays 0.
const AT_ONCE: &str = "[prune]\ndisable_after = \"0s\"\nderegister_after = \"0s\"\n";

/// Builds one AMI per release, a second apart (creation dates have second resolution).
fn build_amis(w: &World, releases: &[&str]) -> Vec<String> {
    releases
        .iter()
        .map(|release| {
            let ami = w.build(&["--app-release", release]);
            std::thread::sleep(Duration::from_millis(1100));
            ami
        })
        .collect()
}

#[test]
fn test_prune_never_removes_an_ami_in_use() {
    let w = World::new("prune");
    w.write_config(AT_ONCE);
    let amis = build_amis(&w, &["1", "2", "3", "4"]);
    // The fleet runs the oldest; the newest is kept by --keep 1; the two between go.
    let lt = w.fleet(&amis[0], 1);
    let snaps: Vec<Vec<String>> = amis.iter().map(|a| w.image_snapshots(a)).collect();

    let dry = w
        .bake(&["prune", "--keep", "1", "--dry-run", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(dry["dry_run"], true);
    let would: Vec<&str> = dry["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kept_because"].is_null())
        .map(|i| i["image_id"].as_str().unwrap())
        .collect();
    assert_eq!(would, vec![amis[2].as_str(), amis[1].as_str()], "{dry}");
    assert_eq!(
        steps(&dry, &amis[1]),
        ["deprecate", "disable", "deregister", "delete-snapshots"],
        "{dry}"
    );
    assert!(
        amis.iter().all(|a| w.image_exists(a)),
        "--dry-run deletes nothing"
    );

    let r = w.bake(&["prune", "--keep", "1"]).expect(0);
    assert!(r.stdout.contains("deleted"), "{r:?}");
    assert!(
        w.image_exists(&amis[0]),
        "in use by the launch template and an instance"
    );
    assert!(w.image_exists(&amis[3]), "the newest is kept");
    assert!(!w.image_exists(&amis[1]) && !w.image_exists(&amis[2]));
    for s in snaps[1].iter().chain(&snaps[2]) {
        assert!(
            !w.snapshot_exists(s),
            "snapshot {s} of a pruned AMI is deleted"
        );
    }
    for s in snaps[0].iter().chain(&snaps[3]) {
        assert!(w.snapshot_exists(s), "snapshot {s} of a kept AMI stays");
    }

    // An AMI referenced by an older launch template version that the instances still run: the
    // default moved on to a version with amis[3] (as after `bake release --no-wait`, before the
    // refresh replaced anything), and a newer AMI takes the --keep 1 slot.
    w.make_default_image(&lt, &amis[3]);
    assert_eq!(w.lt_versions(&lt), (2, 2));
    assert!(
        w.instances().iter().all(|i| i.1 == "1"),
        "the instance still runs version 1: {:?}",
        w.instances()
    );
    let newest = build_amis(&w, &["5"]).remove(0);
    let again = w
        .bake(&["prune", "--keep", "1", "-o", "json"])
        .expect(0)
        .json();
    let old = kept_because(&again, &amis[0]).expect("the instances' image is kept");
    assert!(old.contains("version 1 of"), "{again}");
    let default = kept_because(&again, &amis[3]).expect("the default's image is kept");
    assert!(default.contains("version 2"), "{again}");
    assert!(kept_because(&again, &newest).is_some());
    assert!(w.image_exists(&amis[0]) && w.image_exists(&amis[3]) && w.image_exists(&newest));
}

#[test]
fn test_prune_then_rollback_still_works() {
    let w = World::new("prune-rollback");
    // A and B are released, C (the newest) never is.
    let amis = build_amis(&w, &["a", "b", "c"]);
    let (a, b, c) = (&amis[0], &amis[1], &amis[2]);
    let lt = w.fleet(a, 1);
    // v1 -> A, v2 -> B, v3 -> A (the default).
    let r = w
        .bake(&["release", "--ami", b, "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r["version"], 2, "{r}");
    let r = w
        .bake(&["release", "--ami", a, "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r["version"], 3, "{r}");
    assert_eq!(w.lt_versions(&lt), (3, 3));

    let plan = w
        .bake(&["prune", "--keep", "1", "-o", "json"])
        .expect(0)
        .json();
    let why = kept_because(&plan, b).expect("the image rollback needs is kept");
    assert!(why.contains("bake rollback"), "{plan}");
    assert!(kept_because(&plan, c).is_some(), "the newest: {plan}");
    assert!(kept_because(&plan, a).is_some(), "the default: {plan}");
    assert!(w.image_exists(b));

    // Rollback releases version 2's image again.
    let rb = w.bake(&["rollback", "-o", "json"]).expect(0).json();
    assert_eq!(rb["image_id"], b.as_str(), "{rb}");
    assert_eq!(rb["result"], "successful", "{rb}");
    assert_eq!(w.lt_versions(&lt).0, 4);
    assert!(
        w.instances().iter().all(|i| i.1 == "4"),
        "{:?}",
        w.instances()
    );
}

/// The stages, 2 s apart: an AMI nothing keeps is deprecated, then disabled, then (a dry run
/// says) would be deregistered; once a launch template names it again it is enabled and its
/// deprecation cancelled; when that template is gone, a run with no delays retires it whole.
/// Every launch template of the region keeps its images, the fleet's image parameter keeps
/// its image, whatever the target.
#[test]
fn test_prune_retires_in_stages_and_restores_an_ami_needed_again() {
    let w = World::new("prune-stages");
    w.write_config("[prune]\ndisable_after = \"2s\"\nderegister_after = \"2s\"\n");
    let amis = build_amis(&w, &["a", "b", "c", "d"]);
    let (a, b, c, d) = (&amis[0], &amis[1], &amis[2], &amis[3]);
    w.fleet(d, 1);
    let other = w.rt.block_on(async {
        w.aws
            .ec2
            .create_launch_template()
            .launch_template_name("prune-stages-other")
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(b)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .launch_template()
            .unwrap()
            .launch_template_id()
            .unwrap()
            .to_owned()
    });
    let param = "/bake/prune-stages/image-id";
    crate::util::with_image_parameter(&w, param);
    crate::util::put_image_parameter(&w, param, c);
    let prune = |extra: &[&str]| {
        let mut args = vec!["prune", "--keep", "1", "-o", "json"];
        args.extend_from_slice(extra);
        w.bake(&args).expect(0).json()
    };
    let state = |ami: &str| {
        let i = w.image(ami).expect("the AMI exists");
        (
            i.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            i.deprecation_time().map(ToOwned::to_owned),
        )
    };

    let first = prune(&[]);
    assert_eq!(steps(&first, a), ["deprecate"], "{first}");
    let kept_b = kept_because(&first, b).expect("another launch template's image is kept");
    assert!(kept_b.contains(&other), "{first}");
    let kept_c = kept_because(&first, c).expect("the image parameter's image is kept");
    assert!(kept_c.contains(param), "{first}");
    assert!(kept_because(&first, d).is_some(), "{first}");
    let (st, deprecation) = state(a);
    assert_eq!(st, "available", "a deprecated AMI still launches");
    assert!(deprecation.is_some(), "EC2 has its deprecation time");
    assert!(
        w.tags(a).contains_key("bake:deprecated-at"),
        "{:?}",
        w.tags(a)
    );

    let again = prune(&[]);
    assert!(
        steps(&again, a).is_empty(),
        "the disable delay is not over: {again}"
    );
    let item = &again["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == a.as_str())
        .unwrap()
        .clone();
    assert_eq!(item["stage"], "deprecated", "{again}");
    assert!(
        item["next"].as_str().unwrap().starts_with("disable from "),
        "{again}"
    );

    std::thread::sleep(Duration::from_millis(2200));
    let third = prune(&[]);
    assert_eq!(steps(&third, a), ["disable"], "{third}");
    assert_eq!(state(a).0, "disabled");
    assert!(w.tags(a).contains_key("bake:disabled-at"));

    std::thread::sleep(Duration::from_millis(2200));
    let dry = prune(&["--dry-run"]);
    assert_eq!(steps(&dry, a), ["deregister", "delete-snapshots"], "{dry}");
    assert_eq!(state(a).0, "disabled", "--dry-run changes nothing");

    // Needed again: the other template's new version names it.
    w.rt.block_on(async {
        w.aws
            .ec2
            .create_launch_template_version()
            .launch_template_id(&other)
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(a)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    });
    let restored = prune(&[]);
    assert_eq!(
        steps(&restored, a),
        ["enable", "cancel-deprecation"],
        "{restored}"
    );
    assert!(
        kept_because(&restored, a)
            .unwrap()
            .contains("version 2 of launch template"),
        "{restored}"
    );
    assert_eq!(state(a), ("available".to_owned(), None));
    let tags = w.tags(a);
    assert!(
        !tags.contains_key("bake:deprecated-at") && !tags.contains_key("bake:disabled-at"),
        "{tags:?}"
    );

    // The template goes: a and b are kept by nothing; no delays: retired whole in one run.
    w.rt.block_on(async {
        w.aws
            .ec2
            .delete_launch_template()
            .launch_template_id(&other)
            .send()
            .await
            .unwrap();
    });
    let snaps: Vec<String> = w
        .image_snapshots(a)
        .into_iter()
        .chain(w.image_snapshots(b))
        .collect();
    assert!(!snaps.is_empty());
    let text = std::fs::read_to_string(w.path("bake.toml"))
        .unwrap()
        .replace(
            "disable_after = \"2s\"\nderegister_after = \"2s\"",
            "disable_after = \"0s\"\nderegister_after = \"0s\"",
        );
    w.write_raw_config(&text);
    let last = prune(&[]);
    for ami in [a, b] {
        assert_eq!(
            steps(&last, ami),
            ["deprecate", "disable", "deregister", "delete-snapshots"],
            "{last}"
        );
        assert!(!w.image_exists(ami), "{ami} is deregistered");
    }
    for s in &snaps {
        assert!(!w.snapshot_exists(s), "snapshot {s} is deleted last");
    }
    assert!(w.image_exists(c) && w.image_exists(d));
}
