//! Integration tests of the agent: the real `bake-agent` binary against the local AWS
//! emulator and the hand-written IMDS stand-in (`bake_e2e::Imds`). One test binary, topic modules.

// Integration tests are a test crate of their own: the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

#[path = "agent/util.rs"]
mod util;

#[path = "agent/alarms.rs"]
mod alarms;
#[path = "agent/app_metrics.rs"]
mod app_metrics;
#[path = "agent/cli.rs"]
mod cli;
#[path = "agent/config.rs"]
mod config;
#[path = "agent/image_test.rs"]
mod image_test;
#[path = "agent/input.rs"]
mod input;
#[path = "agent/jobs.rs"]
mod jobs;
#[path = "agent/lease.rs"]
mod lease;
#[path = "agent/leftovers.rs"]
mod leftovers;
#[path = "agent/lifecycle.rs"]
mod lifecycle;
#[path = "agent/logs.rs"]
mod logs;
#[path = "agent/migrate.rs"]
mod migrate;
#[path = "agent/reap.rs"]
mod reap;
#[path = "agent/rollout.rs"]
mod rollout;
#[path = "agent/sandbox.rs"]
mod sandbox;
#[path = "agent/secrets.rs"]
mod secrets;
#[path = "agent/sensitive.rs"]
mod sensitive;
#[path = "agent/socket.rs"]
mod socket;
#[path = "agent/status.rs"]
mod status;
#[path = "agent/supervise.rs"]
mod supervise;
