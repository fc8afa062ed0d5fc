//! Errors told in words: an error with every cause behind it, on one line.

/// `error` and its causes, joined by `: ` (the way `anyhow` shows `{:#}`).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        let told = source.to_string();
        // A cause a wrapper already quoted is not said twice, nor one that only repeats the
        // last thing said with a detail of its own (libgit2's `; class=Os (2)`, SQLite's
        // `Error code 13: …`).
        let last = message.rsplit(": ").next().unwrap_or_default();
        if !message.contains(&told) && !told.contains(last) {
            message.push_str(": ");
            message.push_str(&told);
        }
        cause = source.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Told(&'static str, #[source] Option<Box<Told>>);

    fn told(text: &'static str, cause: Option<Told>) -> Told {
        Told(text, cause.map(Box::new))
    }

    #[test]
    fn causes_are_said_once() {
        let sqlite = told(
            "the ledger /state/ledger.sqlite failed",
            Some(told(
                "database or disk is full",
                Some(told("Error code 13: database or disk is full", None)),
            )),
        );
        assert_eq!(
            chain(&sqlite),
            "the ledger /state/ledger.sqlite failed: database or disk is full"
        );
        let quoted = told(
            "cannot fetch: No space left on device",
            Some(told("No space left on device; class=Os (2)", None)),
        );
        assert_eq!(chain(&quoted), "cannot fetch: No space left on device");
        let plain = told("cannot open the ledger", Some(told("permission denied", None)));
        assert_eq!(chain(&plain), "cannot open the ledger: permission denied");
    }
}
