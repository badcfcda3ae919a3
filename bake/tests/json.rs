//! Every JSON document `bake -o json` prints carries `schema_version`: each command's result and
//! an error.

use crate::util::{World, BASE_AMI};

/// The subcommands whose result is a JSON document (all but the ones that print a script or
/// files).
fn json_commands() -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bake"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let commands = help
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .unwrap_or_else(|| panic!("no Commands: in {help}"));
    commands
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| !["help", "completion", "manpage"].contains(c))
        .map(ToOwned::to_owned)
        .collect()
}

#[test]
fn test_every_json_document_has_a_schema_version() {
    let w = World::new("json-schema");
    w.fleet(BASE_AMI, 1);
    let mut seen = std::collections::BTreeMap::new();
    let mut check = |name: &str, args: &[&str], code: i32| {
        let r = w.bake(args).expect(code);
        let doc = r.json();
        assert_eq!(doc["schema_version"], 1, "{name}: {doc}");
        seen.insert(name.to_owned(), doc);
    };
    check("validate", &["validate", "-o", "json"], 0);
    check("build", &["build", "-o", "json"], 0);
    check("plan", &["plan", "--ami", BASE_AMI, "-o", "json"], 0);
    check(
        "release",
        &["release", "--ami", BASE_AMI, "--no-wait", "-o", "json"],
        0,
    );
    check("status", &["status", "-o", "json"], 0);
    check("rollback", &["rollback", "--no-wait", "-o", "json"], 0);
    check("prune", &["prune", "--dry-run", "-o", "json"], 0);
    // No instance reports here: a failed test, exit 14.
    check(
        "test-image",
        &["test-image", BASE_AMI, "--timeout", "1s", "-o", "json"],
        14,
    );
    // An error document too.
    check(
        "error",
        &["--region", "ap-south-1", "status", "-o", "json"],
        3,
    );
    // A command line clap refuses, too.
    check("usage", &["status", "--nope", "-o", "json"], 2);
    // Promoted to its own region: shared (with nobody), not copied.
    let ami = seen["build"]["image_id"].as_str().unwrap().to_owned();
    let args = [
        "promote",
        &ami,
        "--to",
        "us-east-1",
        "--from-stage",
        "staging",
    ];
    let doc = w
        .bake(&[&args[..], &["-o", "json"]].concat())
        .expect(0)
        .json();
    assert_eq!(doc["schema_version"], 1, "promote: {doc}");
    seen.insert("promote".to_owned(), doc);
    assert_eq!(seen["usage"]["code"], "usage");
    assert_eq!(seen["error"]["code"], "no_group");
    assert_eq!(seen["release"]["result"], "started");
    let commands = json_commands();
    assert!(commands.len() >= 6, "{commands:?}");
    for c in commands {
        assert!(seen.contains_key(&c), "`bake {c} -o json` is not checked");
    }
}
