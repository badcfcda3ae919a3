//! `bake build` with `packer.target = "local"`: the shipped template's null.local source bakes a
//! Debian 12 root file system with the real provisioning scripts, registered in the emulator as
//! an AMI tagged `bake:local-image`. Needs root, systemd-nspawn, debootstrap and the Debian mirror
//! (CI has them; tools/setup installs them).
//!
//! The first test builds with examples/local-image/bake.toml in the repository's own `.work`, so
//! one test run builds the image once (the debootstrap base is cached there between runs too), and
//! anything else with the same inputs reuses it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::World;

fn repo() -> PathBuf {
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap()
}

/// The agent binary of this test run (next to the `bake` under test).
fn agent() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_bake")).with_file_name("bake-agent")
}

/// examples/local-image/bake.toml, in the test's directory, with absolute paths (and this run's
/// agent binary, should the target dir not be the repository's).
fn example_config(w: &World) {
    let repo = repo();
    let text = std::fs::read_to_string(repo.join("examples/local-image/bake.toml")).unwrap();
    let text = text
        .replace(
            "\"../../target/debug/bake-agent\"",
            &format!("{:?}", agent().display().to_string()),
        )
        .replace("\"../../", &format!("\"{}/", repo.display()))
        .replace(
            "\"../app\"",
            &format!("\"{}/examples/app\"", repo.display()),
        );
    assert!(!text.contains("\"../"), "a relative path is left: {text}");
    w.write_raw_config(&text);
}

fn rootfs_of(w: &World, ami: &str) -> PathBuf {
    let tags = w.tags(ami);
    PathBuf::from(
        tags.get("bake:local-image")
            .unwrap_or_else(|| panic!("{ami} has no bake:local-image tag: {tags:?}")),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Packages dpkg lists as installed in the root.
fn installed(root: &Path) -> Vec<String> {
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    status
        .split("\n\n")
        .filter(|p| p.contains("Status: install ok installed"))
        .filter_map(|p| {
            p.lines()
                .find_map(|l| l.strip_prefix("Package: ").map(ToOwned::to_owned))
        })
        .collect()
}

/// What the provisioning scripts made of the root file system.
fn check_rootfs(root: &Path) {
    // install-app.sh: the agent (this run's binary), its config, the units enabled as on EC2, the
    // app, the app's runtime.
    let bin = root.join("usr/local/bin/bake-agent");
    assert_eq!(mode(&bin), 0o755, "{}", bin.display());
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(agent()).unwrap(),
        "the image's agent is not this run's"
    );
    assert_eq!(mode(&root.join("etc/bake/agent.toml")), 0o640);
    for unit in [
        "bake-agent.service",
        "bake-agent-reap.service",
        "bake-agent-reap.timer",
        "bake-user-stats.service",
        "bake-user-stats.timer",
        "bake-image-test.service",
        "bake-migrate.service",
    ] {
        let shipped = std::fs::read(repo().join("systemd").join(unit)).unwrap();
        let baked = std::fs::read(root.join("etc/systemd/system").join(unit))
            .unwrap_or_else(|e| panic!("{unit}: {e}"));
        assert_eq!(baked, shipped, "{unit} differs from systemd/{unit}");
    }
    for (wants, unit) in [
        ("multi-user.target.wants", "bake-agent.service"),
        ("multi-user.target.wants", "bake-image-test.service"),
        ("multi-user.target.wants", "bake-migrate.service"),
        ("timers.target.wants", "bake-agent-reap.timer"),
        ("timers.target.wants", "bake-user-stats.timer"),
        // harden.sh enables the firewall.
        ("sysinit.target.wants", "nftables.service"),
    ] {
        let link = root.join("etc/systemd/system").join(wants).join(unit);
        let target = std::fs::read_link(&link)
            .unwrap_or_else(|e| panic!("{unit} is not enabled ({}): {e}", link.display()));
        assert!(
            target.ends_with(unit),
            "{}: {}",
            link.display(),
            target.display()
        );
    }
    assert_eq!(
        std::fs::read(root.join("opt/app/server.js")).unwrap(),
        std::fs::read(repo().join("examples/app/server.js")).unwrap()
    );
    assert!(root.join("usr/bin/node").exists(), "app_packages: no node");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("app:x:10000:10000:"), "{passwd}");

    // harden.sh: the nftables ruleset with the app_ports set, the sysctls, packages.
    let nft = std::fs::read_to_string(root.join("etc/nftables.conf")).unwrap();
    assert!(nft.contains("set app_ports {"), "{nft}");
    assert!(nft.contains("tcp dport @app_ports accept"), "{nft}");
    assert!(nft.contains("policy drop;"), "{nft}");
    // The ruleset loads in the image itself (its nft, its files; in a network namespace of its
    // own, the image never written: --volatile=overlay).
    let out = std::process::Command::new("systemd-nspawn")
        .args([
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--pipe",
            "--private-network",
        ])
        .args(["--volatile=overlay", "--machine=bake-test-nft", "-D"])
        .arg(root)
        .args(["/usr/sbin/nft", "-c", "-f", "/etc/nftables.conf"])
        .output()
        .expect("systemd-nspawn runs (systemd-container)");
    assert!(
        out.status.success(),
        "the image's /etc/nftables.conf does not load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sysctl = std::fs::read_to_string(root.join("etc/sysctl.d/60-bake-hardening.conf")).unwrap();
    assert!(sysctl.contains("net.ipv4.ip_forward = 0"), "{sysctl}");
    let pkgs = installed(root);
    for p in ["nftables", "auditd", "systemd", "dbus", "nfs-common"] {
        assert!(
            pkgs.iter().any(|i| i == p),
            "{p} is not installed: {pkgs:?}"
        );
    }
    // ssh is masked by harden.sh (a link to /dev/null), whether installed or not.
    let ssh = std::fs::read_link(root.join("etc/systemd/system/ssh.service")).unwrap();
    assert_eq!(ssh, Path::new("/dev/null"));

    // cleanup.sh: no uploads, nothing in /tmp, no apt lists, no SSH server, an empty machine id.
    assert!(!root.join("tmp/bake").exists());
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    let lists: Vec<_> = std::fs::read_dir(root.join("var/lib/apt/lists"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(lists.is_empty(), "apt lists left: {lists:?}");
    assert!(!pkgs.iter().any(|p| p == "openssh-server"), "{pkgs:?}");
    assert_eq!(
        std::fs::metadata(root.join("etc/machine-id"))
            .unwrap()
            .len(),
        0
    );
    // The local build's own policy-rc.d is gone again.
    assert!(!root.join("usr/sbin/policy-rc.d").exists());

    // cleanup.sh's last step: the image's SBOM, with every package installed in the end.
    let file = root.join("usr/share/bake/sbom.cdx.json");
    assert_eq!(mode(&file), 0o644);
    let sbom: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["metadata"]["component"]["name"], "debian");
    assert_eq!(sbom["metadata"]["component"]["version"], "12");
    let of = |eco: &str| -> std::collections::BTreeMap<String, String> {
        sbom["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["purl"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&format!("pkg:{eco}/")))
            })
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["version"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let debs: Vec<String> = of("deb").into_keys().collect();
    let mut want = pkgs.clone();
    want.sort();
    assert_eq!(debs, want, "the SBOM's Debian packages are not dpkg's");
    let lock: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("examples/app/package-lock.json")).unwrap(),
    )
    .unwrap();
    let pg = lock["packages"]["node_modules/pg"]["version"]
        .as_str()
        .unwrap();
    assert_eq!(of("npm").get("pg").map(String::as_str), Some(pg));
    assert!(of("cargo").contains_key("tokio"));
    assert!(
        !of("cargo").contains_key("proptest"),
        "a dev-dependency of the agent"
    );
}

/// The lock the e2e harness takes around its builds of the repository's template
/// (tests/e2e/src/boot/image.rs): Packer's manifest post-processor rewrites one
/// `packer-manifest.json` next to the template directory, and two builds finishing together
/// have failed on it.
fn repository_template_lock() -> nix::fcntl::Flock<std::fs::File> {
    std::fs::create_dir_all("/run/bake-e2e").unwrap();
    let f = std::fs::File::create("/run/bake-e2e/image-build.lock").unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap()
}

#[test]
fn test_local_target_bakes_the_real_provisioning_into_a_rootfs_and_reuses_it() {
    let _lock = repository_template_lock();
    let w = World::new("local-image");
    example_config(&w);
    // With an artifacts bucket: the image's SBOM stored in it (not an input: same image).
    let bucket = "bake-local-image-sboms";
    w.rt.block_on(async {
        w.aws
            .s3
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
    });
    let config = std::fs::read_to_string(w.path("bake.toml")).unwrap();
    w.write_raw_config(&format!("{config}\n[sbom]\nbucket = \"{bucket}\"\n"));
    let started = Instant::now();
    let r = w.bake(&["build", "-o", "json"]).expect(0);
    let first_secs = started.elapsed().as_secs();
    let j = r.json();
    let ami = j["image_id"].as_str().unwrap().to_owned();
    let hash = j["inputs_hash"].as_str().unwrap().to_owned();
    assert_eq!(j["reused"], false, "{j}");
    // Provenance as for any AMI, plus the image's path.
    let tags = w.tags(&ami);
    assert_eq!(tags.get("bake:inputs-hash"), Some(&hash), "{tags:?}");
    assert_eq!(
        tags.get("bake:app-version").map(String::as_str),
        Some("1.0.0")
    );
    for k in [
        "bake:git-commit",
        "bake:built-at",
        "bake:version",
        "bake:template",
    ] {
        assert!(tags.contains_key(k), "{k}: {tags:?}");
    }
    let root = rootfs_of(&w, &ami);
    assert_eq!(root, repo().join(".work/images").join(&hash).join("rootfs"));
    assert!(root.is_absolute());
    check_rootfs(&root);
    let stored = w.rt.block_on(async {
        let key = format!("sbom/{ami}.cdx.json");
        let o = w
            .aws
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        o.body.collect().await.unwrap().into_bytes().to_vec()
    });
    assert_eq!(
        stored,
        std::fs::read(root.join("usr/share/bake/sbom.cdx.json")).unwrap(),
        "the stored SBOM is not the image's"
    );
    assert_eq!(
        j["sbom"]["components"]["deb"].as_u64(),
        Some(installed(&root).len() as u64),
        "{j}"
    );
    assert_eq!(
        tags.get("bake:sbom-sha256"),
        Some(&bake_common::sbom::sha256_hex(&stored))
    );
    // Nothing of the build is left beside the image.
    let leftovers: Vec<_> = std::fs::read_dir(repo().join(".work/images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".build-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!("local image: the first bake build took {first_secs} s");

    // The same inputs: the AMI is reused.
    let again = w.bake(&["build", "-o", "json"]).expect(0).json();
    assert_eq!(again["reused"], true, "{again}");
    assert_eq!(again["image_id"], ami.as_str());

    // Another emulator (another test, another run): no AMI with these inputs there, but the
    // image is reused, not built again; only its AMI record is registered.
    let w2 = World::new("local-image-2");
    example_config(&w2);
    let started = Instant::now();
    let r = w2.bake(&["build", "-o", "json"]).expect(0);
    let j2 = r.json();
    assert_eq!(j2["reused"], false, "{j2}");
    assert_eq!(j2["inputs_hash"], hash.as_str(), "{j2}");
    assert!(r.stderr.contains("reusing the local image"), "{}", r.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "registering a cached image took {:?}",
        started.elapsed()
    );
    let ami2 = j2["image_id"].as_str().unwrap();
    assert_eq!(rootfs_of(&w2, ami2), root);
}

/// A provisioning script that fails: exit 4 naming it, no AMI registered, no image directory,
/// no build directory left.
#[test]
fn test_failed_local_provisioning_registers_no_ami_and_leaves_no_image() {
    let w = World::shipped("local-image-fail");
    // A script that fails after the base and the uploads are in place.
    std::fs::write(
        w.path("packer/scripts/install-app.sh"),
        "#!/usr/bin/env bash\necho 'install-app: no disk left' >&2\nexit 3\n",
    )
    .unwrap();
    // The repository's debootstrap cache, so that this test does not fetch a base of its own.
    let work = w.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let cache = repo().join(".work/debootstrap");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(&cache, work.join("debootstrap")).unwrap();
    w.write_raw_config(&format!(
        r#"[packer]
template = "packer"
agent_binary = {agent:?}
target = "local"
work_dir = "work"
[packer.variables]
source_ami = "{base}"
aide_init = false
[app]
release = "app"
version = "1.0.0"
"#,
        agent = agent().display().to_string(),
        base = crate::util::BASE_AMI,
    ));
    let r = w.bake(&["build", "-o", "json"]).expect(4);
    assert!(r.stderr.contains("no disk left"), "{}", r.stderr);
    let images: Vec<_> = std::fs::read_dir(work.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(images.is_empty(), "left in work/images: {images:?}");
    w.rt.block_on(async {
        let out = w
            .aws
            .ec2
            .describe_images()
            .owners("self")
            .send()
            .await
            .unwrap();
        assert!(out.images().is_empty(), "{:?}", out.images());
    });
}

/// Ctrl-C while a script runs in the root: bake stops Packer, the container's processes end with
/// it, and neither an image, nor a build directory, nor an AMI is left.
#[test]
fn test_interrupted_local_build_leaves_no_image_and_no_process() {
    let w = World::shipped("local-image-int");
    std::fs::write(
        w.path("packer/scripts/install-app.sh"),
        "#!/usr/bin/env bash
echo 'install-app: waiting' >&2
exec -a bake-test-local-image-int sleep 300
",
    )
    .unwrap();
    let work = w.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let cache = repo().join(".work/debootstrap");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(&cache, work.join("debootstrap")).unwrap();
    w.write_raw_config(&format!(
        r#"[packer]
template = "packer"
agent_binary = {agent:?}
target = "local"
work_dir = "work"
[packer.variables]
source_ami = "{base}"
aide_init = false
[app]
release = "app"
"#,
        agent = agent().display().to_string(),
        base = crate::util::BASE_AMI,
    ));
    let child = w
        .command(&["build"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The script runs inside the root: its sleep, named by `exec -a`.
    let in_root = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with(b"bake-test-local-image-int\0"))
            })
            .collect()
    };
    let ran = w.wait_for(Duration::from_secs(120), || !in_root().is_empty());
    // Interrupted in any case, so that nothing outlives a failing test.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(ran, "install-app.sh never ran in the root");
    let images = work.join("images");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&images)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left in work/images: {left:?}");
    assert!(
        w.wait_for(Duration::from_secs(10), || in_root().is_empty()),
        "processes of the root outlive the build: {:?}",
        in_root()
    );
    w.rt.block_on(async {
        let out = w
            .aws
            .ec2
            .describe_images()
            .owners("self")
            .send()
            .await
            .unwrap();
        assert!(out.images().is_empty(), "{:?}", out.images());
    });
}

/// `packer.target` takes "ami" or "local"; anything else is an error naming the key.
#[test]
fn test_unknown_packer_target_is_a_config_error() {
    let w = World::new("local-image-target");
    let text = std::fs::read_to_string(w.path("bake.toml"))
        .unwrap()
        .replace("[packer]\n", "[packer]\ntarget = \"lokal\"\n");
    w.write_raw_config(&text);
    let r = w.bake(&["validate"]).expect(2);
    assert!(r.stderr.contains("packer.target"), "{}", r.stderr);
    assert!(r.stderr.contains("\"lokal\""), "{}", r.stderr);
}
