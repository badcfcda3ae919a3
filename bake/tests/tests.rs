//! Integration tests of `bake`: the real binary, the real Packer (Debian's 1.6.6), the local AWS
//! emulator. Each test has its own emulator and its own temporary directory (Packer writes temp
//! files); run with `cargo test -p bake --test integration`.

mod util;

// Topic modules under cfg(test): clippy's tests_outside_test_module looks for it.
#[cfg(test)]
mod build;
#[cfg(test)]
mod canary;
#[cfg(test)]
mod cli;
#[cfg(test)]
mod config;
#[cfg(test)]
mod errors;
#[cfg(test)]
mod image_test;
#[cfg(test)]
mod json;
#[cfg(test)]
mod layout;
#[cfg(test)]
mod local_image;
#[cfg(test)]
mod migrate;
#[cfg(test)]
mod plan;
#[cfg(test)]
mod promote;
#[cfg(test)]
mod prune;
#[cfg(test)]
mod release;
#[cfg(test)]
mod rollout;
#[cfg(test)]
mod sbom;
#[cfg(test)]
mod status;
#[cfg(test)]
mod template;
