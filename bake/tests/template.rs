//! The shipped template's communicator and the order of its provisioning steps, read from the
//! files themselves (the emulator builds run no provisioner: communicator none).

use std::path::Path;

fn repo_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Lines that are not comments or blank.
fn code(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The default of `variable "NAME"` in an HCL text.
fn default_of<'a>(hcl: &'a str, name: &str) -> &'a str {
    let start = hcl
        .find(&format!("variable \"{name}\""))
        .unwrap_or_else(|| panic!("no variable {name}"));
    let block = &hcl[start..];
    let block = &block[..block.find("\n}").unwrap()];
    let line = block
        .lines()
        .find(|l| l.trim_start().starts_with("default"))
        .unwrap_or_else(|| panic!("variable {name} has no default"));
    line.split('=').nth(1).unwrap().trim().trim_matches('"')
}

/// The real template says which communicator it uses: SSH through Session Manager.
#[test]
fn test_template_uses_ssh_over_session_manager_with_an_instance_profile() {
    let hcl = repo_file("packer/bake.pkr.hcl");
    assert_eq!(default_of(&hcl, "communicator"), "ssh");
    assert_eq!(default_of(&hcl, "ssh_interface"), "session_manager");
    assert!(hcl.contains("iam_instance_profile = var.iam_instance_profile"));
    // Session Manager needs an instance profile: the example names iam.yaml's.
    let example = repo_file("examples/bake.toml");
    assert!(
        code(&example)
            .iter()
            .any(|l| l.starts_with("iam_instance_profile = \"bake-prod-build\"")),
        "examples/bake.toml sets packer.variables.iam_instance_profile"
    );
    let iam = repo_file("cloudformation/iam.yaml");
    assert!(iam.contains("InstanceProfileName: !Sub \"bake-${EnvName}-build\""));
}

/// Every provisioner after harden.sh opens new SSH sessions: sshd must stay until the very end.
/// openssh-server is removed only as the last step of cleanup.sh, the last script of the last
/// provisioner.
#[test]
fn test_sshd_is_removed_only_after_the_last_session_is_opened() {
    let hcl = repo_file("packer/bake.pkr.hcl");
    // The build instance's provisioners come before the shell-local ones (null.local's, on the
    // build host); the last of them runs local.provision_scripts.
    let remote = &hcl[..hcl.find("provisioner \"shell-local\"").unwrap_or(hcl.len())];
    let last_provisioner = &remote[remote.rfind("provisioner \"").unwrap()..];
    assert!(
        last_provisioner.contains("= local.provision_scripts"),
        "{last_provisioner}"
    );
    let list = &hcl[hcl.find("provision_scripts = [").unwrap()..];
    let scripts: Vec<&str> = list[..list.find(']').unwrap()]
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("\"${path.root}/scripts/"))
        .collect();
    assert_eq!(
        scripts.last().copied(),
        Some("\"${path.root}/scripts/cleanup.sh\","),
        "{scripts:?}"
    );
    for script in ["harden.sh", "install-app.sh"] {
        let text = repo_file(&format!("packer/scripts/{script}"));
        let removes: Vec<&str> = code(&text)
            .into_iter()
            .filter(|l| l.contains("openssh-server"))
            .collect();
        assert!(
            removes.is_empty(),
            "{script} touches openssh-server while Packer's communicator needs it: {removes:?}"
        );
    }
    let cleanup = repo_file("packer/scripts/cleanup.sh");
    let lines = code(&cleanup);
    let at = lines
        .iter()
        .position(|l| l.contains("openssh-server"))
        .expect("cleanup.sh removes openssh-server");
    // After it: only the removal itself (package tools and their conditionals), the SBOM of
    // the result (written and printed by this same session) and sync.
    for l in &lines[at..] {
        let ok = [
            "log ",
            "if ",
            "elif ",
            "else",
            "fi",
            "DEBIAN_FRONTEND=",
            "apt-get ",
            "mapfile ",
            "dpkg ",
            "dnf ",
            "/usr/local/bin/bake-agent sbom ",
            "sync",
        ]
        .iter()
        .any(|p| l.starts_with(p));
        assert!(ok, "cleanup.sh does more after removing sshd: {l:?}");
    }
    // And everything else cleanup.sh does comes before it.
    assert!(lines[..at]
        .iter()
        .any(|l| l.starts_with("truncate -s 0 /etc/machine-id")));
}
