//! State storage, behind the `Store` trait.

mod file;
pub use file::*;
