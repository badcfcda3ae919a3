use std::path::{Path, PathBuf};

/// The repository root.
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/e2e sits two levels below the repository root")
        .to_path_buf()
}

/// A binary of the workspace (`bake`, `bake-agent`) in the target directory that holds the
/// running test executable. `make test` builds them before running tests; nothing here builds.
#[must_use]
pub fn workspace_bin(name: &str) -> PathBuf {
    // The test executable is target/<profile>/deps/<name>-<hash>; binaries are in target/<profile>.
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build --workspace` (make test does) first",
        bin.display()
    );
    bin
}
