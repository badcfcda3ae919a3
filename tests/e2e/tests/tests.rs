//! Integration tests against the local AWS emulator (one emulator per test).

mod cloudwatch_cbor;
mod emulator;
mod fleet;
mod packer;
