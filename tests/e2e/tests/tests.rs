//! Integration tests against the local AWS emulator (one emulator per test).

#[cfg(test)]
mod booted;
#[cfg(test)]
mod cloudwatch_cbor;
#[cfg(test)]
mod emulator;
#[cfg(test)]
mod fleet;
#[cfg(test)]
mod packer;
#[cfg(test)]
mod socket_activation;
