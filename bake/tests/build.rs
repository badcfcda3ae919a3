//! `bake build`: provenance tags, the bake cache (with the shipped template), `--force`, an
//! interrupted build.

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

/// Processes (other than this test) that run in `dir` or name it on their command line.
fn processes_in(dir: &std::path::Path) -> Vec<String> {
    let me = std::process::id().to_string();
    let dir = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(e.path().join("cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if cwd.starts_with(&dir) || cmdline.contains(&dir) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// Files under `dir`, relative, sorted.
fn tree(dir: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The bake cache with the shipped template: reused when nothing changed (the build writes
/// nothing into the hashed directory), rebuilt when any input changed — a directory app
/// release's content, a unit the template uploads from ../systemd, the base AMI the filter
/// resolves to — and bake says which.
#[test]
fn test_shipped_template_cache_covers_every_input_and_says_what_changed() {
    let w = World::shipped("build-shipped");
    let base_a = w.register_base_image("debian-12-amd64-20250101-1");
    let before = tree(&w.path("packer"));
    let first = w.bake(&["build", "-o", "json"]).expect(0).json();
    assert_eq!(first["reused"], false, "{first}");
    assert_eq!(first["base_ami"], base_a.as_str(), "{first}");
    let ami1 = first["image_id"].as_str().unwrap().to_owned();
    assert_eq!(
        tree(&w.path("packer")),
        before,
        "the build wrote into the template directory"
    );
    assert_eq!(
        w.tags(&ami1).get("bake:template").map(String::as_str),
        Some("packer")
    );
    assert_eq!(
        w.tags(&ami1).get("bake:input:base-ami").map(String::as_str),
        Some(base_a.as_str())
    );

    // Nothing changed: reused.
    let again = w.bake(&["build", "-o", "json"]).expect(0);
    assert_eq!(again.json()["reused"], true, "{again:?}");
    assert_eq!(again.json()["image_id"], ami1.as_str());

    // The template names its AMIs by the second: one build per second.
    let next_second = || std::thread::sleep(Duration::from_millis(1100));
    // New app code in the directory release: built anew, and said why.
    next_second();
    std::fs::write(w.path("app/server.js"), "// v2\n").unwrap();
    let r = w.bake(&["build", "-o", "json"]).expect(0);
    let j = r.json();
    assert_eq!(j["reused"], false, "{r:?}");
    assert_eq!(j["changed_since"], ami1.as_str(), "{j}");
    assert_eq!(j["changes"], serde_json::json!(["app release"]), "{j}");
    assert!(r.stderr.contains("app release"), "{}", r.stderr);
    let ami2 = j["image_id"].as_str().unwrap().to_owned();

    // A unit the template uploads from ../systemd.
    next_second();
    let unit = w.path("systemd/bake-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(&unit, format!("{text}\n# changed\n")).unwrap();
    let r = w.bake(&["build", "-o", "json"]).expect(0);
    let j = r.json();
    assert_eq!(j["reused"], false, "{r:?}");
    assert_eq!(j["changed_since"], ami2.as_str(), "{j}");
    assert_eq!(
        j["changes"],
        serde_json::json!(["systemd/bake-agent.service"]),
        "{j}"
    );
    assert!(
        r.stderr.contains("systemd/bake-agent.service"),
        "{}",
        r.stderr
    );
    let ami3 = j["image_id"].as_str().unwrap().to_owned();

    // A newer base image is published: the filter resolves to it, before the build.
    next_second();
    let base_b = w.register_base_image("debian-12-amd64-20250201-2");
    let r = w.bake(&["build", "-o", "json"]).expect(0);
    let j = r.json();
    assert_eq!(j["reused"], false, "{r:?}");
    assert_eq!(j["base_ami"], base_b.as_str(), "{j}");
    let said = format!("base AMI {base_a} → {base_b}");
    assert_eq!(j["changes"], serde_json::json!([said]), "{j}");
    assert!(r.stderr.contains(&said), "{}", r.stderr);
    assert_eq!(j["changed_since"], ami3.as_str(), "{j}");
    // Packer built from exactly that AMI: its (terminated) build instance ran it.
    let sources: Vec<String> = w.rt.block_on(async {
        let out = w.aws.ec2.describe_instances().send().await.unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.image_id().map(ToOwned::to_owned))
            .collect()
    });
    assert!(sources.contains(&base_b), "{sources:?}");
    // And nothing changed since: reused.
    let r = w.bake(&["build", "-o", "json"]).expect(0).json();
    assert_eq!(r["reused"], true, "{r}");
}

#[test]
fn test_interrupted_build_leaves_nothing_behind() {
    interrupt_build("build-interrupt", nix::sys::signal::Signal::SIGINT);
}

/// A CI runner's cancel (SIGTERM) and a closed terminal (SIGHUP) stop a build like Ctrl-C.
#[test]
fn test_sigterm_during_build_leaves_no_packer_instance_or_staging_dir() {
    interrupt_build("build-sigterm", nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn test_sighup_during_build_cleans_up_too() {
    interrupt_build("build-sighup", nix::sys::signal::Signal::SIGHUP);
}

/// Sends `sig` to `bake build` while Packer's temporary resources exist; checks that bake waits
/// for Packer's cleanup and leaves nothing behind.
fn interrupt_build(name: &str, sig: nix::sys::signal::Signal) {
    let w = World::new(name);
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
    assert!(
        !processes_in(w.dir.path()).is_empty(),
        "packer runs in the test directory"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        sig,
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
    assert!(stderr.contains(sig.as_str()), "names the signal: {stderr}");
    // No Packer process (nor its plugin processes) outlives bake, and the staging dir is gone.
    assert!(
        w.wait_for(Duration::from_secs(5), || processes_in(w.dir.path())
            .is_empty()),
        "left running: {:?}",
        processes_in(w.dir.path())
    );
    let staging: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".bake-packer-"))
        .collect();
    assert!(staging.is_empty(), "staging directories left: {staging:?}");
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

/// A stand-in for a Debian archive's `InRelease` on 127.0.0.1: answers every GET with the
/// current content (404 when `None`). Stops with the test process.
fn archive(content: std::sync::Arc<std::sync::Mutex<Option<String>>>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/debian/dists/bookworm/InRelease",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let answer = match content.lock().unwrap().clone() {
                Some(body) => format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                ),
                None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned(),
            };
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    url
}

/// `packer.package_indexes`: the archive's state is an input. The same `InRelease` → the image
/// is reused (`--if-changed`: "unchanged"); a new one (a security update) → baked anew, the
/// change named; an archive that cannot be read → exit 4 naming the key and the URL, nothing
/// built.
#[test]
fn test_a_new_package_index_bakes_anew_and_says_so() {
    let w = World::new("build-index");
    let content = std::sync::Arc::new(std::sync::Mutex::new(Some(
        "Origin: Debian\nDate: Mon, 30 Nov 2026 08:00:00 UTC\n".to_owned(),
    )));
    let url = archive(content.clone());
    let text = std::fs::read_to_string(w.path("bake.toml")).unwrap();
    let text = text.replacen(
        "agent_binary = \"bake-agent\"\n",
        &format!("agent_binary = \"bake-agent\"\npackage_indexes = [\"{url}\"]\n"),
        1,
    );
    w.write_raw_config(&text);
    let first = w.bake(&["build", "-o", "json"]).expect(0).json();
    assert_eq!(first["reused"], false, "{first}");
    let again = w.bake(&["build", "--if-changed", "-o", "json"]).expect(0);
    assert_eq!(again.json()["reused"], true, "{}", again.stderr);
    assert_eq!(again.json()["image_id"], first["image_id"]);
    assert!(again.stderr.contains("unchanged: "), "{}", again.stderr);

    *content.lock().unwrap() =
        Some("Origin: Debian\nDate: Tue, 01 Dec 2026 08:00:00 UTC\n".to_owned());
    let changed = w.bake(&["build", "--if-changed", "-o", "json"]).expect(0);
    let j = changed.json();
    assert_eq!(j["reused"], false, "{j}");
    assert_ne!(j["image_id"], first["image_id"]);
    assert_eq!(j["changed_since"], first["image_id"], "{j}");
    let want = format!(
        "package index {}",
        url.trim_start_matches("http://")
            .trim_end_matches("/InRelease")
    );
    assert_eq!(j["changes"], serde_json::json!([want]), "{j}");
    assert!(
        changed.stderr.contains(&format!(
            "changed since {}: {want}",
            first["image_id"].as_str().unwrap()
        )),
        "{}",
        changed.stderr
    );

    *content.lock().unwrap() = None;
    let gone = w.bake(&["build", "-o", "json"]).expect(4);
    assert!(
        gone.stderr.contains(&format!(
            "packer.package_indexes: {url}: answered 404 Not Found"
        )),
        "{}",
        gone.stderr
    );
    // A bad URL is refused with the file and the key, before anything is read.
    w.write_raw_config(&text.replace(
        &url,
        "https://deb.debian.org/debian/dists/bookworm/InRelease",
    ));
    let bad = w.bake(&["build"]).expect(2);
    assert!(
        bad.stderr.contains("packer.package_indexes[0]") && bad.stderr.contains("only http://"),
        "{}",
        bad.stderr
    );
}
