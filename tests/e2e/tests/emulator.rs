//! The emulator answers the SDK calls the binaries make.
