//! Test harness for bake's integration and end-to-end tests.
//!
//! - [`emulator`]: starts the local AWS emulator (moto + bake's extension) on a free loopback
//!   port, one per caller, and stops it when dropped, also when a test panics.
//! - [`paths`]: the repository, the built binaries.

/// The local AWS emulator.
pub mod emulator;
/// Paths in the repository and the target directory.
pub mod paths;

pub use emulator::Emulator;
