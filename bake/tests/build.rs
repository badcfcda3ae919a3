//! `bake build`: provenance tags, the bake cache, `--force`, an interrupted build.

use std::time::Duration;

use crate::util::World;

#[test]
fn test_build_tags_ami_and_snapshots_then_cache_hit_and_force() {
    let w = World::new("build-cache");
    let first = w.bake(&["build", "-o", "json"]).expect(0);
    let j = first.json();
    let ami = j["image_id"].as_str().unwrap().to_owned();
    assert!(ami.starts_with("ami-"), "{j}");
    assert_eq!(j["reused"], false);
    assert_eq!(j["region"], "us-east-1");
    let hash = j["inputs_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    // Provenance on the AMI and on every snapshot behind it.
    let snaps = w.image_snapshots(&ami);
    assert!(!snaps.is_empty());
    for id in std::iter::once(&ami).chain(&snaps) {
        let tags = w.tags(id);
        assert_eq!(tags.get("bake:inputs-hash"), Some(&hash), "{id}: {tags:?}");
        assert!(tags.contains_key("bake:git-commit"), "{id}: {tags:?}");
        assert!(
            tags.get("bake:version")
                .is_some_and(|v| v.starts_with(env!("CARGO_PKG_VERSION"))),
            "{id}: {tags:?}"
        );
        assert!(
            tags.get("bake:built-at").is_some_and(|v| v.ends_with('Z')),
            "{id}: {tags:?}"
        );
    }
    // Instances of a baked AMI must use IMDSv2 (set by bake: Packer 1.6.6 cannot).
    assert_eq!(w.image_imds_support(&ami).as_deref(), Some("v2.0"));
    // Progress went to stderr, the result alone to stdout.
    assert!(
        first.stderr.contains("Launching a source AWS instance") || first.stderr.contains("build"),
        "{}",
        first.stderr
    );

    // Same inputs: reused, and said so.
    let again = w.bake(&["build"]).expect(0);
    assert!(again.stdout.starts_with(&ami), "{again:?}");
    assert!(again.stdout.contains("reused"), "{again:?}");
    assert!(again.stderr.contains("reusing"), "{again:?}");

    // --force builds anew.
    let forced = w.bake(&["build", "--force", "-o", "json"]).expect(0).json();
    assert_ne!(forced["image_id"], j["image_id"]);
    assert_eq!(forced["reused"], false);
    assert_eq!(forced["inputs_hash"], j["inputs_hash"]);

    // A different input (the app release) is a different hash: no reuse.
    let other = w
        .bake(&["build", "--app-release", "2.0.0", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(other["reused"], false);
    assert_ne!(other["inputs_hash"], j["inputs_hash"]);
}

#[test]
fn test_interrupted_build_leaves_nothing_behind() {
    let w = World::new("build-interrupt");
    w.write_config("");
    // The fixture's shell-local step sleeps while Packer's temporary resources exist.
    let text = std::fs::read_to_string(w.path("bake.toml"))
        .unwrap()
        .replace(
            "[packer.variables]\n",
            "[packer.variables]\nsleep_secs = \"60\"\n",
        );
    w.write_raw_config(&text);
    let child = w
        .command(&["build"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = || {
        w.rt.block_on(async {
            let kp = w.aws.ec2.describe_key_pairs().send().await.unwrap();
            let inst = w
                .aws
                .ec2
                .describe_instances()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("instance-state-name")
                        .values("running")
                        .build(),
                )
                .send()
                .await
                .unwrap();
            kp.key_pairs()
                .iter()
                .any(|k| k.key_name().is_some_and(|n| n.starts_with("packer_")))
                && !inst.reservations().is_empty()
        })
    };
    assert!(
        w.wait_for(Duration::from_secs(60), running),
        "packer never launched its instance"
    );
    // Give Packer a moment to reach its provisioner.
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bake took {:?} to stop",
        started.elapsed()
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    w.rt.block_on(async {
        let kp = w.aws.ec2.describe_key_pairs().send().await.unwrap();
        let left: Vec<_> = kp
            .key_pairs()
            .iter()
            .filter_map(|k| k.key_name())
            .filter(|n| n.starts_with("packer_"))
            .collect();
        assert!(left.is_empty(), "key pairs left: {left:?}");
        let sgs = w.aws.ec2.describe_security_groups().send().await.unwrap();
        let left: Vec<_> = sgs
            .security_groups()
            .iter()
            .filter_map(|g| g.group_name())
            .filter(|n| n.starts_with("packer_"))
            .collect();
        assert!(left.is_empty(), "security groups left: {left:?}");
        let inst = w.aws.ec2.describe_instances().send().await.unwrap();
        let alive: Vec<_> = inst
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| {
                i.state()
                    .and_then(|s| s.name())
                    .is_some_and(|s| s.as_str() != "terminated")
            })
            .filter_map(|i| i.instance_id())
            .collect();
        assert!(alive.is_empty(), "instances left: {alive:?}");
        let images = w
            .aws
            .ec2
            .describe_images()
            .owners("self")
            .send()
            .await
            .unwrap();
        assert!(
            images.images().is_empty(),
            "no AMI from an interrupted build"
        );
    });
}
