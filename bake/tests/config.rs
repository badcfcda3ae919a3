//! Bad configuration, unknown stacks, `bake validate`.

use crate::util::World;

#[test]
fn test_bad_configs_name_the_key() {
    let w = World::new("config-bad");
    let cases: &[(&str, &str)] = &[
        (
            "[refresh]\ninstance_warmup = \"soon\"\n",
            "refresh.instance_warmup",
        ),
        (
            "[refresh]\nmin_healthy_percentage = 101\n",
            "refresh.min_healthy_percentage",
        ),
        (
            "[target]\nstack = \"a\"\nauto_scaling_group = \"b\"\n",
            "target.auto_scaling_group",
        ),
        ("[target]\nasg = \"b\"\n", "asg"),
        ("[packer]\nagent_binary = \"x\"\n", "packer.template"),
        ("[prune]\nkeep = -1\n", "prune.keep"),
        ("[prune]\ndisable_after = \"soon\"\n", "prune.disable_after"),
        ("[prune]\nderegister_after = \"11years\"\n", "prune.deregister_after"),
        (
            "[target]\nauto_scaling_group = \"b\"\nimage_parameter = \"bake/prod/image-id\"\n",
            "target.image_parameter: \"bake/prod/image-id\" must be a path starting with '/'",
        ),
        (
            "[target]\nauto_scaling_group = \"b\"\nimage_parameter = \"/aws/service/x\"\n",
            "target.image_parameter: \"/aws/service/x\": names beginning with \"aws\" or \"ssm\" are reserved",
        ),
    ];
    for (text, key) in cases {
        w.write_raw_config(text);
        let r = w.bake(&["validate"]).expect(2);
        assert!(r.stderr.contains(key), "{text:?} -> {}", r.stderr);
        assert!(r.stderr.contains("bake.toml"), "{text:?} -> {}", r.stderr);
    }
    // A command that needs a section the file lacks.
    w.write_raw_config("[aws]\nregion = \"us-east-1\"\n");
    let r = w.bake(&["release", "--ami", "ami-1"]).expect(2);
    assert!(r.stderr.contains("target"), "{}", r.stderr);
    // A missing file.
    let r = w.bake(&["--config", "nope.toml", "status"]).expect(2);
    assert!(r.stderr.contains("nope.toml"), "{}", r.stderr);
}

#[test]
fn test_unknown_stack_and_group_are_clear_errors() {
    let w = World::new("config-stack");
    w.write_raw_config("[target]\nstack = \"no-such-stack\"\n");
    let r = w.bake(&["status", "-o", "json"]).expect(3);
    assert!(
        r.stderr
            .contains("target.stack: CloudFormation stack 'no-such-stack' does not exist"),
        "{}",
        r.stderr
    );
    // The error is a JSON document on stdout too.
    let doc = r.json();
    assert_eq!(doc["code"], "no_stack", "{doc}");
    assert_eq!(doc["exit_code"], 3, "{doc}");
    assert_eq!(
        doc["error"],
        "target.stack: CloudFormation stack 'no-such-stack' does not exist"
    );
    w.write_raw_config("[target]\nauto_scaling_group = \"no-such-group\"\n");
    let r = w.bake(&["status"]).expect(3);
    assert!(
        r.stderr
            .contains("auto scaling group 'no-such-group' does not exist"),
        "{}",
        r.stderr
    );
}

#[test]
fn test_validate_runs_packer_validate_without_aws() {
    let w = World::new("config-validate");
    // No AWS: an endpoint nobody listens on would make any call fail.
    let text = std::fs::read_to_string(w.path("bake.toml")).unwrap();
    w.write_raw_config(&format!(
        "[aws]\nendpoint_url = \"http://127.0.0.1:9\"\nregion = \"us-east-1\"\n{text}"
    ));
    let r = w.bake(&["validate", "-o", "json"]).expect(0);
    let j = r.json();
    assert_eq!(j["valid"], true);
    assert!(
        j["checks"][1].as_str().unwrap().contains("packer 1."),
        "{j}"
    );
    // A broken template is a config error with Packer's message.
    std::fs::write(
        w.path("packer/broken.pkr.hcl"),
        "build {\n  sources = [\"source.amazon-ebs.nonsense\"]\n}\n",
    )
    .unwrap();
    let r = w.bake(&["validate"]).expect(2);
    assert!(r.stderr.contains("packer validate failed"), "{}", r.stderr);
    assert!(r.stderr.contains("nonsense"), "{}", r.stderr);
}

/// An endpoint that accepts connections and never answers: `bake status` fails within the
/// configured timeouts (exit 3), naming the service and the endpoint.
#[test]
fn test_status_against_a_silent_endpoint_fails_in_bounded_time() {
    let w = World::new("config-silent");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    w.write_raw_config(&format!(
        "[aws]\nendpoint_url = \"http://{addr}\"\nregion = \"us-east-1\"\nmax_attempts = 2\nattempt_timeout = \"500ms\"\noperation_timeout = \"3s\"\n[target]\nauto_scaling_group = \"web\"\n"
    ));
    let started = std::time::Instant::now();
    let r = w.bake(&["status"]).expect(3);
    let elapsed = started.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(10),
        "took {elapsed:?}"
    );
    assert!(r.stderr.contains(&addr.to_string()), "{}", r.stderr);
    assert!(r.stderr.contains("Auto Scaling"), "{}", r.stderr);
    // Zero and unbounded timeouts are refused where they are parsed.
    w.write_raw_config("[aws]\nattempt_timeout = \"0s\"\n");
    let r = w.bake(&["validate"]).expect(2);
    assert!(r.stderr.contains("attempt_timeout"), "{}", r.stderr);
    drop(listener);
}
