//! Handing freed memory back to the system after the agent's large, passing work (rendering
//! every environment, making the cache's packs one). glibc keeps freed memory for reuse, and
//! work of thousands of services leaves megabytes that the next round fragments further:
//! without this the agent grew by 39 MB over 1,000 commits of 1,000 services
//! (docs/performance.md).

/// Gives the free pages of every allocator arena back to the system.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only hands free pages back; it takes the allocator's own locks.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}
