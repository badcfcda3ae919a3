//! Integration tests of `bake`: the real binary, the real Packer (Debian's 1.6.6), the local AWS
//! emulator. Each test has its own emulator and its own temporary directory (Packer writes temp
//! files); run with `cargo test -p bake --test integration`.

mod util;

mod build;
mod config;
mod prune;
mod release;
