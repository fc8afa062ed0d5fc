//! The `local` target: each replica a supervised child process with its output in rotating log
//! files, each service port behind a built-in router that splits traffic between two slots.

pub mod logs;
pub mod process;
pub mod runtime;

pub use runtime::{LocalRuntime, RuntimeError};
