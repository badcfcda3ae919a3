//! `bake prune`: never an AMI in use, never the newest K.

use std::time::Duration;

use crate::util::World;

#[test]
fn test_prune_never_removes_an_ami_in_use() {
    let w = World::new("prune");
    // Three bake-made AMIs, a second apart (creation dates have second resolution).
    let mut amis = Vec::new();
    for release in ["1", "2", "3", "4"] {
        amis.push(w.build(&["--app-release", release]));
        std::thread::sleep(Duration::from_millis(1100));
    }
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
    // An AMI referenced only by an older launch template version that an instance runs stays too:
    // release the newest (no wait), then prune with --keep 1 again... the newest is both.
    let (default, _) = w.lt_versions(&lt);
    assert_eq!(default, 1);
    let again = w
        .bake(&["prune", "--keep", "1", "-o", "json"])
        .expect(0)
        .json();
    let deleted = again["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kept_because"].is_null())
        .count();
    assert_eq!(deleted, 0, "{again}");
}
