//! `bake promote`: copies in other regions with the source's provenance, encrypted, shared with
//! an account, taken up again by a second run; what it refuses; and
//! `release.require_promoted_from`, which releases only images promoted from that stage.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Image, ImageAttributeName, SnapshotAttributeName};

use crate::util::{World, BASE_AMI};

/// Where the tests bake their source images (the World's own region is us-east-1).
const SOURCE_REGION: &str = "us-west-2";
const ACCOUNT: &str = "111122223333";
const KEY: &str = "alias/bake-ami";

/// EC2 of `region` on the World's emulator.
fn ec2_in(w: &World, region: &str) -> aws_sdk_ec2::Client {
    let settings = bake_common::aws::AwsSettings {
        region: Some(region.to_owned()),
        ..w.emu.settings()
    };
    w.rt.block_on(bake_e2e::emulator::clients(&settings, w.emu.credentials()))
        .ec2
}

fn image_in(w: &World, region: &str, ami: &str) -> Image {
    let ec2 = ec2_in(w, region);
    w.rt.block_on(ec2.describe_images().image_ids(ami).send())
        .unwrap()
        .images()[0]
        .clone()
}

fn tags_of(image: &Image) -> BTreeMap<String, String> {
    image
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
        .collect()
}

/// The images of `region` tagged `bake:promoted-from` = `from`.
fn copies_in(w: &World, region: &str, from: &str) -> Vec<String> {
    let ec2 = ec2_in(w, region);
    let out =
        w.rt.block_on(
            ec2.describe_images()
                .owners("self")
                .filters(
                    Filter::builder()
                        .name("tag:bake:promoted-from")
                        .values(from)
                        .build(),
                )
                .send(),
        )
        .unwrap();
    out.images()
        .iter()
        .map(|i| i.image_id().unwrap().to_owned())
        .collect()
}

/// The accounts with launch permission on `ami`, and with create-volume permission on each of
/// its snapshots.
fn shared_with(w: &World, region: &str, image: &Image) -> (Vec<String>, Vec<Vec<String>>) {
    let ec2 = ec2_in(w, region);
    w.rt.block_on(async {
        let launch = ec2
            .describe_image_attribute()
            .image_id(image.image_id().unwrap())
            .attribute(ImageAttributeName::LaunchPermission)
            .send()
            .await
            .unwrap()
            .launch_permissions()
            .iter()
            .filter_map(|p| p.user_id().map(str::to_owned))
            .collect();
        let mut volumes = Vec::new();
        for m in image.block_device_mappings() {
            let Some(snap) = m.ebs().and_then(|e| e.snapshot_id()) else {
                continue;
            };
            let out = ec2
                .describe_snapshot_attribute()
                .snapshot_id(snap)
                .attribute(SnapshotAttributeName::CreateVolumePermission)
                .send()
                .await
                .unwrap();
            volumes.push(
                out.create_volume_permissions()
                    .iter()
                    .filter_map(|p| p.user_id().map(str::to_owned))
                    .collect(),
            );
        }
        (launch, volumes)
    })
}

/// A bake-made image in [`SOURCE_REGION`].
fn source_image(w: &World) -> String {
    w.build(&["--region", SOURCE_REGION])
}

#[test]
fn test_promote_copies_to_two_regions_tagged_encrypted_and_shared() {
    let w = World::new("promote");
    let src = source_image(&w);
    let from = format!("{SOURCE_REGION}/{src}");
    let args = [
        "--region",
        SOURCE_REGION,
        "promote",
        &src,
        "--to",
        "us-east-1,eu-west-1",
        "--to",
        SOURCE_REGION,
        "--account",
        ACCOUNT,
        "--kms-key",
        KEY,
        "--from-stage",
        "staging",
        "-o",
        "json",
    ];
    let doc = w.bake(&args).expect(0).json();
    assert_eq!(doc["source_image_id"], src.as_str(), "{doc}");
    assert_eq!(doc["promoted_from"], from.as_str(), "{doc}");
    assert_eq!(doc["stage"], "staging", "{doc}");
    let source = image_in(&w, SOURCE_REGION, &src);
    let source_tags = tags_of(&source);
    let hash = source_tags["bake:inputs-hash"].clone();
    assert_eq!(doc["inputs_hash"], hash.as_str());
    let regions = doc["regions"].as_array().unwrap();
    let names: Vec<&str> = regions
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["us-east-1", "eu-west-1", SOURCE_REGION], "{doc}");

    let mut copies = BTreeMap::new();
    for r in &regions[..2] {
        let region = r["region"].as_str().unwrap();
        let id = r["image_id"].as_str().unwrap();
        assert_ne!(id, src, "{doc}");
        assert_eq!(r["new"], true, "{doc}");
        assert_eq!(r["source"], false, "{doc}");
        assert_eq!(r["shared_with"], serde_json::json!([ACCOUNT]), "{doc}");
        assert_eq!(r["inputs_hash"], hash.as_str(), "{doc}");
        // What AWS holds: the copy in its region, every provenance tag of the source, the
        // promotion's two, the same inputs hash.
        let copy = image_in(&w, region, id);
        assert_eq!(copy.name(), source.name());
        let tags = tags_of(&copy);
        for (k, v) in source_tags.iter().filter(|(k, _)| k.starts_with("bake:")) {
            assert_eq!(tags.get(k), Some(v), "{region} {id}: {k} in {tags:?}");
        }
        assert!(
            tags.keys().any(|k| k.starts_with("bake:input:")),
            "{tags:?}"
        );
        assert_eq!(tags["bake:promoted-from"], from);
        assert_eq!(tags["bake:promoted-stage"], "staging");
        assert_eq!(tags["bake:inputs-hash"], hash);
        // Encrypted with the key given; its snapshots tagged too.
        let snapshots: Vec<_> = copy
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs())
            .collect();
        assert!(!snapshots.is_empty(), "{copy:?}");
        for e in &snapshots {
            assert_eq!(e.encrypted(), Some(true), "{region}: {e:?}");
            assert_eq!(e.kms_key_id(), Some(KEY), "{region}: {e:?}");
            let snap = e.snapshot_id().unwrap();
            assert_eq!(r["snapshots"], serde_json::json!([snap]), "{doc}");
            let ec2 = ec2_in(&w, region);
            let snap_tags =
                w.rt.block_on(
                    ec2.describe_tags()
                        .filters(Filter::builder().name("resource-id").values(snap).build())
                        .send(),
                )
                .unwrap();
            assert!(
                snap_tags
                    .tags()
                    .iter()
                    .any(|t| t.key() == Some("bake:promoted-from")
                        && t.value() == Some(from.as_str())),
                "{snap}: {snap_tags:?}"
            );
        }
        assert_eq!(r["encrypted"], true);
        assert_eq!(r["kms_key_id"], KEY);
        // Shared: launch permission and create-volume permission for the account.
        let (launch, volumes) = shared_with(&w, region, &copy);
        assert_eq!(launch, [ACCOUNT], "{region}");
        assert_eq!(volumes, vec![vec![ACCOUNT.to_owned()]], "{region}");
        copies.insert(region.to_owned(), id.to_owned());
    }
    // The source region: no copy, the source itself shared.
    let own = &regions[2];
    assert_eq!(own["image_id"], src.as_str());
    assert_eq!(
        (own["source"].clone(), own["new"].clone()),
        (true.into(), false.into())
    );
    assert!(copies_in(&w, SOURCE_REGION, &from).is_empty());
    let (launch, volumes) = shared_with(&w, SOURCE_REGION, &source);
    assert_eq!(launch, [ACCOUNT]);
    assert!(volumes.iter().all(|v| v == &[ACCOUNT]), "{volumes:?}");
    assert!(!tags_of(&image_in(&w, SOURCE_REGION, &src)).contains_key("bake:promoted-stage"));

    // Again: the copies are found by their tag, not made anew.
    let again = w.bake(&args).expect(0).json();
    for r in &again["regions"].as_array().unwrap()[..2] {
        let region = r["region"].as_str().unwrap();
        assert_eq!(r["image_id"], copies[region].as_str(), "{again}");
        assert_eq!(r["new"], false, "{again}");
        assert_eq!(copies_in(&w, region, &from), [copies[region].clone()]);
    }
    let text = w.bake(&args[..args.len() - 2]).expect(0).stdout;
    assert!(
        text.contains(&format!("us-east-1  {}  existing copy, encrypted with {KEY}, shared with {ACCOUNT}, inputs hash verified", copies["us-east-1"])),
        "{text}"
    );
}

#[test]
fn test_promote_refuses_before_copying_anything() {
    let w = World::new("promote-refuse");
    let promote = |extra: &[&str]| {
        let mut args = vec!["--region", SOURCE_REGION, "promote"];
        args.extend_from_slice(extra);
        w.bake(&args)
    };
    // `bake promote ARGS` exits 2 and says `why` on stderr.
    let refused = |extra: &[&str], why: &str| {
        let r = promote(extra).expect(2);
        assert!(r.stderr.contains(why), "{why}:\n{}", r.stderr);
    };
    // Not bake-made: moto's stock image has no bake:inputs-hash.
    refused(
        &[BASE_AMI, "--to", "eu-west-1", "--from-stage", "staging"],
        &format!(
            "{BASE_AMI} in {SOURCE_REGION} has no bake:inputs-hash tag: it was not made by bake"
        ),
    );
    let src = source_image(&w);
    // No stage: neither --from-stage nor release.stage.
    refused(
        &[&src, "--to", "eu-west-1"],
        "give --from-stage NAME or set release.stage",
    );
    // Sharing copies on the default EBS key, which EBS refuses.
    refused(
        &[
            &src,
            "--to",
            "eu-west-1",
            "--from-stage",
            "s",
            "--account",
            ACCOUNT,
        ],
        "--account: a copy encrypted with a region's default EBS key",
    );
    // A key of another region.
    let key = "arn:aws:kms:us-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    refused(
        &[
            &src,
            "--to",
            "eu-west-1",
            "--from-stage",
            "s",
            "--kms-key",
            key,
        ],
        "a key of us-west-2 cannot encrypt a copy in eu-west-1",
    );
    assert!(copies_in(&w, "eu-west-1", &format!("{SOURCE_REGION}/{src}")).is_empty());
    // release.stage is the stage recorded when --from-stage is not given; no key: the
    // destination's default EBS key.
    w.write_config("[release]\nstage = \"qa\"\n");
    let doc = promote(&[&src, "--to", "eu-west-1", "-o", "json"])
        .expect(0)
        .json();
    let copy = doc["regions"][0]["image_id"].as_str().unwrap();
    let image = image_in(&w, "eu-west-1", copy);
    assert_eq!(tags_of(&image)["bake:promoted-stage"], "qa");
    let ebs = image.block_device_mappings()[0].ebs().unwrap();
    assert_eq!(ebs.encrypted(), Some(true), "{ebs:?}");
    assert!(
        ebs.kms_key_id().is_some(),
        "the region's aws/ebs key: {ebs:?}"
    );
}

#[test]
fn test_release_requires_an_image_promoted_from_the_stage() {
    let w = World::new("promote-release");
    // The fleet (us-east-1) runs an image baked here, never promoted.
    let local = w.build(&[]);
    let lt = w.fleet(&local, 1);
    // Staging's bake.toml names its stage; this one requires images from it.
    let config = std::fs::read_to_string(w.path("bake.toml")).unwrap();
    std::fs::write(
        w.path("staging.toml"),
        format!("{config}[release]\nstage = \"staging\"\n"),
    )
    .unwrap();
    w.write_config("[release]\nstage = \"prod\"\nrequire_promoted_from = \"staging\"\n");

    let r = w.bake(&["release", "--ami", &local]).expect(17);
    assert!(
        r.stderr.contains(&format!(
            "{local} was never promoted (no bake:promoted-stage tag)"
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("release.require_promoted_from = \"staging\""),
        "{}",
        r.stderr
    );
    let doc = w
        .bake(&["release", "--ami", &local, "-o", "json"])
        .expect(17)
        .json();
    assert_eq!(doc["code"], "not_promoted", "{doc}");
    assert_eq!(w.lt_versions(&lt), (1, 1), "nothing changed");

    // Promoted from staging (its bake.toml's release.stage) into this region: released.
    let src = source_image(&w);
    let doc = w
        .bake(&[
            "-c",
            "staging.toml",
            "--region",
            SOURCE_REGION,
            "promote",
            &src,
            "--to",
            "us-east-1",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(doc["stage"], "staging", "{doc}");
    let copy = doc["regions"][0]["image_id"].as_str().unwrap().to_owned();
    let r = w
        .bake(&["release", "--ami", &copy, "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r["image_id"], copy.as_str(), "{r}");
    assert_eq!(r["result"], "successful", "{r}");
    assert_eq!(w.lt_versions(&lt).0, 2);
}
