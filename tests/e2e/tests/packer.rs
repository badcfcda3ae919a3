//! Debian's Packer builds an AMI in the emulator, and the SDK finds it.

use std::process::Command;

use bake_e2e::Emulator;

#[tokio::test(flavor = "multi_thread")]
async fn test_packer_build_against_emulator() {
    let emu = Emulator::start().unwrap();
    let aws = emu.aws().await;
    let source = aws.ec2.describe_images().send().await.unwrap();
    let source_ami = source.images()[0].image_id().unwrap().to_owned();
    let template = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/packer/minimal.pkr.hcl"
    );
    let work = tempfile::tempdir().unwrap();

    let out = Command::new("packer")
        .args(["build", "-machine-readable", "-color=false"])
        .arg(format!("-var=endpoint={}", emu.url()))
        .arg(format!("-var=source_ami={source_ami}"))
        .arg("-var=name=bake-e2e-minimal")
        .arg(template)
        .current_dir(work.path())
        .envs(emu.env())
        // Packer keeps its cache and plugins under PACKER_* dirs; keep them in the test's dir.
        .env("PACKER_CACHE_DIR", work.path().join("cache"))
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .expect("packer is installed (make setup installs Debian's)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "packer failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Machine-readable artifact line: TIMESTAMP,BUILD,artifact,0,id,REGION:AMI
    let ami = stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(6, ',').collect();
            (f.len() == 6 && f[2] == "artifact" && f[4] == "id").then(|| f[5].to_owned())
        })
        .next()
        .expect("an artifact id line");
    let ami = ami
        .strip_prefix("us-east-1:")
        .expect("region-prefixed id")
        .to_owned();

    let images = aws
        .ec2
        .describe_images()
        .owners("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:bake:test")
                .values("bake-e2e-minimal")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let found: Vec<&str> = images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .collect();
    assert_eq!(found, vec![ami.as_str()]);
    assert_eq!(images.images()[0].name(), Some("bake-e2e-minimal"));

    // Packer cleaned up after itself: its source instance is terminated, its temporary key pair
    // and security group are gone.
    let keys = aws.ec2.describe_key_pairs().send().await.unwrap();
    assert!(
        keys.key_pairs()
            .iter()
            .all(|k| !k.key_name().unwrap_or_default().starts_with("packer")),
        "{:?}",
        keys.key_pairs()
    );
    let groups = aws.ec2.describe_security_groups().send().await.unwrap();
    assert!(groups
        .security_groups()
        .iter()
        .all(|g| !g.group_name().unwrap_or_default().starts_with("packer")));
}
