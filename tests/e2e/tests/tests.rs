//! Integration tests against the local AWS emulator (one emulator per test).

mod cloudwatch_cbor;
mod emulator;
#[cfg(test)]
mod fleet;
mod packer;
