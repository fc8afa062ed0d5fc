//! Where environments run. So far the building blocks of the `local` target: supervised
//! replica processes and their logs. The `Target` interface (observe, deploy into a slot, route,
//! retire, health, jobs) arrives with the reconciler.

pub mod local;
