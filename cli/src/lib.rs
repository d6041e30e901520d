//! The command line definition of `twofold` (the binary is src/main.rs).

pub mod args;
