//! The supervisor's lifecycle.
pub mod run;
pub use run::*;
