//! Test harness for bake's integration and end-to-end tests.
//!
//! - [`emulator`]: starts the local AWS emulator (moto + bake's extension) on a free loopback
//!   port, one per caller, and stops it when dropped, also when a test panics.
//! - [`paths`]: the repository, the built binaries.
//! - [`iam`]: an environment's roles from the real iam.yaml, and the CI job's web identity.
//! - [`imds`]: the hand-written instance metadata (IMDSv2) stand-in, one per simulated instance.
//! - [`fleet`]: the local fleet (agents, apps, haproxy) playing out an emulated Auto Scaling group.
//! - [`boot`]: booted instances: an AMI's local image under systemd-nspawn, in its own network
//!   namespace.
//! - [`db`]: a real PostgreSQL server, the fleet's database (RDS's stand-in).
//! - [`tty`]: a command with its stderr on a terminal, and what the screen shows.

/// Clients for every service.
pub mod aws;
/// Booted instances: an AMI's image under systemd-nspawn, systemd as PID 1.
pub mod boot;
/// The fleet's database: a real PostgreSQL standing in for RDS.
pub mod db;
/// The local AWS emulator.
pub mod emulator;
/// The local fleet: simulated instances of the emulator's Auto Scaling group, haproxy, load.
pub mod fleet;
/// An environment's identities from cloudformation/iam.yaml, for runs with IAM enforced.
pub mod iam;
/// The hand-written instance metadata (IMDSv2) stand-in.
pub mod imds;
/// Paths in the repository and the target directory.
pub mod paths;
/// Child processes that do not outlive the harness.
pub mod process;
/// A command run on a terminal (a pty), and what its screen shows.
pub mod tty;

pub use aws::Aws;
pub use emulator::Emulator;
pub use imds::{Imds, ImdsState};
