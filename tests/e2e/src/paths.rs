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
/// running executable: a test (`target/<profile>/deps/<name>-<hash>`) or one of the harness's
/// own programs (`target/<profile>/bake-fleet`). `make test` builds them before running tests;
/// nothing here builds.
#[must_use]
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable has a path");
    let dir = exe.parent().expect("an executable lives in a directory");
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps/ lives in target/<profile>")
    } else {
        dir
    };
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build --workspace` (make test does) first",
        bin.display()
    );
    bin
}
