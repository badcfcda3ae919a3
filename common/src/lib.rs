//! bake-common: the little that `bake` and `bake-agent` share.
//!
//! - [`aws`]: one `SdkConfig` built from the SDK's standard chain (region, profile, credentials,
//!   `AWS_ENDPOINT_URL` and its per-service variants), and [`aws_client!`] to build each
//!   service's client from it (no service crate here: each binary depends on the ones it calls);
//! - [`duration`]: humantime strings (`"30s"`, `"14d"`) in config files;
//! - [`refresh_preferences`]: the instance refresh preferences `bake release` records for the
//!   agent's secret-rotation rollouts;
//! - [`logging`]: the `tracing` subscriber, readable on a terminal or JSON for machines;
//! - [`version`]: the version string with the git commit, for `--version`;
//! - [`cli`]: the command-line options both binaries have (verbosity, log format);
//! - [`exit`]: exit codes carried through an error chain, and result lines on stdout;
//! - [`sbom`]: an image's software bill of materials (CycloneDX) and the difference of two.
#![warn(missing_docs)]

pub mod aws;
pub mod cli;
pub mod duration;
pub mod exit;
pub mod logging;
pub mod refresh_preferences;
pub mod sbom;
pub mod version;
