//! `bake prune`: never an AMI in use, never the newest K, never what `bake rollback` needs.

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
