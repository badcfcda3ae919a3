//! Errors one can act on: one sentence for each common failure (no credentials, an endpoint
//! that does not answer, a group that does not exist, no Packer), the SDK's debug dump only
//! with `-v`, and under `--output json` an error document on stdout as well.

use std::process::Command;

use crate::util::{Run, World};

const BAKE: &str = env!("CARGO_BIN_EXE_bake");

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `bake ARGS` in `dir` with nothing of the environment but `PATH`, `HOME` = `dir` and `env`.
fn bake_bare(dir: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> Run {
    let mut c = Command::new(BAKE);
    c.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir);
    for (k, v) in env {
        c.env(k, v);
    }
    Run::from_output(c.output().expect("bake runs"))
}

/// The one `error: …` line of stderr (the log line's timestamp and level stripped).
fn error_line(r: &Run) -> String {
    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.contains("error: ")).collect();
    assert_eq!(lines.len(), 1, "one error line: {r:#?}");
    let l = lines[0];
    l[l.find("error: ").unwrap() + "error: ".len()..].to_owned()
}

/// The error document of `-o json`: schema version, message, name, exit code.
#[track_caller]
fn assert_error_doc(r: &Run, code: &str, exit: i32, message: &str) {
    let doc = r.json();
    assert_eq!(doc["schema_version"], 1, "{doc}");
    assert_eq!(doc["code"], code, "{doc}");
    assert_eq!(doc["exit_code"], exit, "{doc}");
    assert_eq!(doc["error"], message, "{doc}");
    assert_eq!(error_line(r), message, "stderr says it too");
}

fn bake_toml(dir: &std::path::Path, endpoint: &str, extra: &str) {
    std::fs::write(
        dir.join("bake.toml"),
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\nmax_attempts = 1\n\
             [target]\nauto_scaling_group = \"web\"\n{extra}"
        ),
    )
    .unwrap();
}

#[test]
fn test_no_credentials_is_one_sentence_saying_where_to_get_them() {
    let dir = tempfile::tempdir().unwrap();
    bake_toml(
        dir.path(),
        &format!("http://127.0.0.1:{}", closed_port()),
        "",
    );
    // An empty environment and HOME; the instance metadata service (the chain's last provider)
    // is a closed port, as on a laptop.
    let imds = [(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        format!("http://127.0.0.1:{}", closed_port()),
    )];
    let want = "no AWS credentials found: set AWS_PROFILE (or --profile) to a profile of \
                ~/.aws/config, run 'aws sso login', or set AWS_ACCESS_KEY_ID and \
                AWS_SECRET_ACCESS_KEY";
    let r = bake_bare(dir.path(), &["status"], &imds).expect(3);
    assert_eq!(error_line(&r), want);
    assert!(r.stdout.is_empty(), "{r:?}");
    assert!(
        !r.stderr.contains("CredentialsNotLoaded") && !r.stderr.contains("Attempted"),
        "no SDK dump without -v: {}",
        r.stderr
    );
    let r = bake_bare(dir.path(), &["status", "-v"], &imds).expect(3);
    assert!(
        r.stderr.contains("CredentialsNotLoaded") && r.stderr.contains("Ec2InstanceMetadata"),
        "-v shows the SDK's chain: {}",
        r.stderr
    );
    let r = bake_bare(dir.path(), &["status", "-o", "json"], &imds).expect(3);
    assert_error_doc(&r, "no_credentials", 3, want);
}

#[test]
fn test_an_endpoint_that_does_not_answer_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    bake_toml(dir.path(), &endpoint, "");
    let creds = [
        ("AWS_ACCESS_KEY_ID", "k".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "s".to_owned()),
    ];
    let want = format!(
        "no answer from Auto Scaling at {endpoint}/ (Connection refused (os error 111)): check \
         the region (--region, AWS_REGION, aws.region), the endpoint (AWS_ENDPOINT_URL, \
         aws.endpoint_url) and the network"
    );
    let r = bake_bare(dir.path(), &["status"], &creds).expect(3);
    assert_eq!(error_line(&r), want);
    assert!(!r.stderr.contains("DispatchFailure"), "{}", r.stderr);
    let r = bake_bare(dir.path(), &["status", "-v"], &creds).expect(3);
    assert!(r.stderr.contains("DispatchFailure"), "{}", r.stderr);
    let r = bake_bare(dir.path(), &["rollback", "-o", "json"], &creds).expect(3);
    assert_error_doc(&r, "no_answer", 3, &want);
}

#[test]
fn test_a_missing_group_is_named_with_its_region_and_account() {
    let w = World::new("err-group");
    // 123456789012: the emulator's account (STS GetCallerIdentity).
    let want = format!(
        "auto scaling group '{}' does not exist in region us-east-1 of account 123456789012",
        w.asg()
    );
    let r = w.bake(&["status"]).expect(3);
    assert_eq!(error_line(&r), want);
    let r = w
        .bake(&["release", "--ami", "ami-1", "-o", "json"])
        .expect(3);
    assert_error_doc(&r, "no_group", 3, &want);
}

#[test]
fn test_no_packer_is_said_before_any_aws_call() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("packer")).unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    // The endpoint listens: a call bake made would show up as a connection.
    let aws = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    aws.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", aws.local_addr().unwrap());
    let creds = [
        ("AWS_ACCESS_KEY_ID", "k".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "s".to_owned()),
        // A PATH without packer.
        ("PATH", dir.path().join("bin").display().to_string()),
    ];
    let on_path = "no 'packer' on PATH: install Packer (Debian and Ubuntu: 'apt install \
                   packer'; elsewhere https://developer.hashicorp.com/packer/install) or set \
                   packer.binary in bake.toml to its path";
    bake_toml(dir.path(), &endpoint, "[packer]\ntemplate = \"packer\"\n");
    for cmd in ["release", "build"] {
        let r = bake_bare(dir.path(), &[cmd], &creds).expect(2);
        assert_eq!(error_line(&r), on_path, "{cmd}");
        let r = bake_bare(dir.path(), &[cmd, "-o", "json"], &creds).expect(2);
        assert_error_doc(&r, "no_packer", 2, on_path);
    }
    bake_toml(
        dir.path(),
        &endpoint,
        "[packer]\ntemplate = \"packer\"\nbinary = \"/nonexistent/packer\"\n",
    );
    let r = bake_bare(dir.path(), &["release"], &creds).expect(2);
    assert_eq!(
        error_line(&r),
        "packer.binary: '/nonexistent/packer' does not exist or is not executable: install \
         Packer (Debian and Ubuntu: 'apt install packer'; elsewhere \
         https://developer.hashicorp.com/packer/install) or correct packer.binary in bake.toml"
    );
    match aws.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("bake called AWS before looking for packer: {other:?}"),
    }
}

#[test]
fn test_other_errors_keep_their_text_without_the_sdk_dump() {
    let dir = tempfile::tempdir().unwrap();
    bake_toml(dir.path(), "http://127.0.0.1:9", "");
    let creds = [
        ("AWS_ACCESS_KEY_ID", "k".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "s".to_owned()),
    ];
    // A region that is no host name: the SDK refuses to build the request.
    let r = bake_bare(
        dir.path(),
        &["--region", "no such region", "status"],
        &creds,
    )
    .expect(3);
    let line = error_line(&r);
    assert!(
        line.starts_with("describing auto scaling group 'web': failed to construct request"),
        "{line}"
    );
    assert!(line.contains("`region`"), "{line}");
    assert!(!line.contains("ConstructionFailure"), "{line}");
    let r = bake_bare(
        dir.path(),
        &["--region", "no such region", "status", "-o", "json"],
        &creds,
    )
    .expect(3);
    assert_error_doc(&r, "aws", 3, &line);
}

#[test]
fn test_no_region_says_where_to_set_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bake.toml"),
        "[aws]\nendpoint_url = \"http://127.0.0.1:9\"\n[target]\nauto_scaling_group = \"web\"\n",
    )
    .unwrap();
    let env = [
        ("AWS_ACCESS_KEY_ID", "k".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "s".to_owned()),
        // Not on EC2: the chain's last source of a region has none.
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    let want = "no AWS region: set --region, AWS_REGION or aws.region in bake.toml (or region \
                in the profile of ~/.aws/config)";
    for args in [
        &["status"][..],
        &["release", "--ami", "ami-1"],
        &["rollback"],
        &["prune"],
    ] {
        let r = bake_bare(dir.path(), args, &env).expect(3);
        assert_eq!(error_line(&r), want, "{args:?}");
    }
    let r = bake_bare(dir.path(), &["status", "-o", "json"], &env).expect(3);
    assert_error_doc(&r, "no_region", 3, want);
    // With one, the call is made (and fails on the closed port).
    let r = bake_bare(dir.path(), &["--region", "us-east-1", "status"], &env).expect(3);
    assert!(
        error_line(&r).starts_with("no answer from Auto Scaling"),
        "{r:?}"
    );
}
