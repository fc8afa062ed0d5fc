//! Servers the tests start once per test process (a Docker Engine, a Kubernetes control plane):
//! each gets a parent-death signal, so it dies with the test process and nothing outlives the
//! run.

pub use plumb::lab::{gone, spawn_tied};
