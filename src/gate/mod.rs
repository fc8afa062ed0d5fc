//! The gates a commit passes before an environment applies it, beside its signature: the sync
//! windows in which changes may land, the signatures its images must carry, and the approvals it
//! needs (promotion, which needs the
//! ledger, is judged by the agent). Their rules come from the environment's rollback point
//! (the last commit applied healthy), so a commit is judged by the rules it found, not by the
//! ones it brings; the first deployment is judged by its own.

pub mod approval;
pub mod images;
pub mod window;
