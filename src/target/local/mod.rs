//! The `local` target's parts: replicas as supervised child processes with their output in
//! rotating log files.

pub mod logs;
pub mod process;
