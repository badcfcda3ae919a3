//! The reaper removes only what expired, never follows symlinks.

use std::time::{Duration, SystemTime};

use crate::util::AGENT;

fn age(path: &std::path::Path, days: u64) {
    let t = SystemTime::now() - Duration::from_secs(days * 86_400);
    let ts = nix::sys::time::TimeSpec::from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

#[test]
fn test_reap_removes_only_expired() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("keep-me");
    std::fs::write(&victim, "outside").unwrap();
    age(&victim, 30);
    std::fs::create_dir(outside.path().join("dir")).unwrap();
    std::fs::write(outside.path().join("dir/also-keep"), "x").unwrap();
    age(&outside.path().join("dir/also-keep"), 30);

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("old/nested")).unwrap();
    std::fs::create_dir_all(r.join("mixed")).unwrap();
    std::fs::create_dir_all(r.join("fresh-empty")).unwrap();
    std::fs::write(r.join("old/a.bin"), vec![0u8; 1000]).unwrap();
    std::fs::write(r.join("old/nested/b.bin"), vec![0u8; 24]).unwrap();
    std::fs::write(r.join("mixed/old.bin"), vec![0u8; 100]).unwrap();
    std::fs::write(r.join("mixed/new.bin"), vec![0u8; 7]).unwrap();
    std::fs::write(r.join("new.bin"), vec![0u8; 5]).unwrap();
    std::os::unix::fs::symlink(&victim, r.join("old-link")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("dir"), r.join("linked-dir")).unwrap();
    for p in [
        "old/a.bin",
        "old/nested/b.bin",
        "mixed/old.bin",
        "old-link",
        "linked-dir",
    ] {
        age(&r.join(p), 20);
    }
    for p in ["old/nested", "old"] {
        age(&r.join(p), 20);
    }

    // Symlinks count with their own size: the length of the path they hold.
    let bytes = 1124 + victim.as_os_str().len() + outside.path().join("dir").as_os_str().len();
    // Dry run: reports, removes nothing.
    let out = std::process::Command::new(AGENT)
        .args(["reap"])
        .arg(r)
        .args(["--older-than", "14d", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "would remove 5 files ({bytes} bytes) and 2 empty directories"
        )),
        "{text}"
    );
    assert!(r.join("old/a.bin").exists());

    let out = std::process::Command::new(AGENT)
        .args(["reap"])
        .arg(r)
        .args(["--older-than", "14d"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "removed 5 files ({bytes} bytes) and 2 empty directories"
        )),
        "{text}"
    );
    assert!(!r.join("old").exists(), "expired tree removed");
    assert!(!r.join("mixed/old.bin").exists());
    assert!(
        r.join("mixed/new.bin").exists()
            && r.join("new.bin").exists()
            && r.join("fresh-empty").exists()
    );
    assert!(
        !r.join("old-link").exists() && !r.join("linked-dir").exists(),
        "expired links go themselves"
    );
    assert!(victim.exists(), "a symlink's target is never touched");
    assert!(
        outside.path().join("dir/also-keep").exists(),
        "a symlinked directory is not descended"
    );
    assert!(r.exists());
}

#[test]
fn test_reap_bad_arguments() {
    let out = std::process::Command::new(AGENT)
        .args(["reap", "/nonexistent-dir-xyz", "--older-than", "14d"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir-xyz"));
    let out = std::process::Command::new(AGENT)
        .args(["reap", "/tmp", "--older-than", "fortnight"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
