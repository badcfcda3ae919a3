//! Version strings for `--version`.

/// The git commit the binary was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("BAKE_GIT_COMMIT");

/// `0.1.0 (commit abcdef123456)`: the crate version of the caller and the build's commit.
#[must_use]
pub fn long_version(crate_version: &str) -> String {
    format!("{crate_version} (commit {GIT_COMMIT})")
}

/// A `&'static str` for clap's `version` attribute, built once per process.
#[macro_export]
macro_rules! clap_version {
    () => {{
        static V: ::std::sync::OnceLock<String> = ::std::sync::OnceLock::new();
        V.get_or_init(|| $crate::version::long_version(env!("CARGO_PKG_VERSION")))
            .as_str()
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_long_version_names_commit() {
        let v = long_version("1.2.3");
        assert!(v.starts_with("1.2.3 (commit "), "{v}");
        assert!(!GIT_COMMIT.is_empty());
    }
}
