//! Wiring the pieces into a running agent. So far: the fetch worker of a repository, which turns
//! triggers into fetched and authenticated heads. Reconciling those heads arrives with the
//! reconciler.

mod fetcher;

pub use fetcher::{Fetch, FetchError, Fetcher, Update};
