//! SSH host key checking against an OpenSSH `known_hosts` file, so a fetch over SSH never talks
//! to a host it cannot identify. Plain (`host,host2`), bracketed (`[host]:2222`), wildcard
//! (`*.example.com`, `10.0.0.?`), negated (`!bastion`) and hashed (`|1|salt|hash`) patterns are
//! understood; `@revoked` lines refuse a key wherever they appear; `@cert-authority` lines are
//! not supported and never match.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// What a `known_hosts` file says of a host's key.
#[derive(Debug, PartialEq, Eq)]
pub enum HostKey {
    /// The key is listed for the host.
    Known,
    /// The host is listed, with other keys only: possibly an attack.
    Mismatch,
    /// The key is listed as revoked.
    Revoked,
    /// The host is not listed.
    Unknown,
}

/// Checks `key` (the raw wire-format host key) offered by `host` (a name, with `port` when it is
/// not 22) against the text of a `known_hosts` file.
pub fn check(known_hosts: &str, host: &str, port: Option<u16>, key: &[u8]) -> HostKey {
    let name = host_name(host, port);
    let mut entries = Vec::new();
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut patterns = fields.next().unwrap_or_default();
        let marker = patterns.strip_prefix('@');
        if marker.is_some() {
            patterns = fields.next().unwrap_or_default();
        }
        let (Some(_kind), Some(encoded)) = (fields.next(), fields.next()) else {
            continue;
        };
        if patterns_match(patterns, &name) {
            let same_key = decode_base64(encoded).is_some_and(|listed| listed == key);
            entries.push((marker, same_key));
        }
    }
    // A revocation wins wherever it is written.
    if entries.iter().any(|&(marker, same)| marker == Some("revoked") && same) {
        return HostKey::Revoked;
    }
    let plain: Vec<bool> = entries
        .iter()
        .filter(|(m, _)| m.is_none())
        .map(|&(_, same)| same)
        .collect();
    if plain.contains(&true) {
        HostKey::Known
    } else if plain.is_empty() {
        HostKey::Unknown
    } else {
        HostKey::Mismatch
    }
}

/// The name `known_hosts` uses for a host: bracketed with the port when it is not 22.
pub fn host_name(host: &str, port: Option<u16>) -> String {
    match port {
        Some(port) if port != 22 => format!("[{host}]:{port}"),
        _ => host.to_owned(),
    }
}

/// A `known_hosts` line for `host` with `key` of `kind` (`ssh-ed25519`…).
pub fn line(host: &str, port: Option<u16>, kind: &str, key: &[u8]) -> String {
    format!("{} {kind} {}\n", host_name(host, port), encode_base64(key))
}

fn patterns_match(patterns: &str, name: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        let Some((salt, hash)) = hashed.split_once('|') else {
            return false;
        };
        let (Some(salt), Some(hash)) = (decode_base64(salt), decode_base64(hash)) else {
            return false;
        };
        let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else {
            return false;
        };
        mac.update(name.as_bytes());
        return mac.verify_slice(&hash).is_ok();
    }
    let mut matched = false;
    for pattern in patterns.split(',') {
        match pattern.strip_prefix('!') {
            Some(negated) if glob(negated.as_bytes(), name.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= glob(pattern.as_bytes(), name.as_bytes()),
        }
    }
    matched
}

/// OpenSSH's pattern syntax: `*` any run of characters, `?` one character.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => glob(rest, name) || (!name.is_empty() && glob(pattern, &name[1..])),
        (Some((b'?', rest)), Some((_, tail))) => glob(rest, tail),
        (Some((p, rest)), Some((n, tail))) if p.eq_ignore_ascii_case(n) => glob(rest, tail),
        _ => false,
    }
}

fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

/// Standard base64 with padding, as `known_hosts` writes it.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn key() -> Vec<u8> {
        decode_base64(KEY).unwrap()
    }

    #[test]
    fn plain_bracketed_and_hashed_patterns() {
        let file = format!("git.example.com,10.0.0.1 ssh-ed25519 {KEY}\n[git.example.com]:2222 ssh-ed25519 {KEY}\n");
        assert_eq!(check(&file, "git.example.com", None, &key()), HostKey::Known);
        assert_eq!(check(&file, "10.0.0.1", Some(22), &key()), HostKey::Known);
        assert_eq!(check(&file, "git.example.com", Some(2222), &key()), HostKey::Known);
        assert_eq!(check(&file, "other.example.com", None, &key()), HostKey::Unknown);
        assert_eq!(check(&file, "git.example.com", None, b"another key"), HostKey::Mismatch);

        // `ssh-keygen -H` of "git.example.com", salt and hash computed independently.
        let salt = [7u8; 20];
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt).unwrap();
        mac.update(b"git.example.com");
        let hash = mac.finalize().into_bytes();
        let hashed = format!(
            "|1|{}|{} ssh-ed25519 {KEY}\n",
            encode_base64(&salt),
            encode_base64(&hash)
        );
        assert_eq!(check(&hashed, "git.example.com", None, &key()), HostKey::Known);
        assert_eq!(check(&hashed, "git.example.org", None, &key()), HostKey::Unknown);
    }

    #[test]
    fn revoked_keys_are_refused_wherever_listed() {
        let file = format!("git.example.com ssh-ed25519 {KEY}\n@revoked * ssh-ed25519 {KEY}\n");
        assert_eq!(check(&file, "git.example.com", None, &key()), HostKey::Revoked);
        let file = format!("@revoked other.example.com ssh-ed25519 {KEY}\ngit.example.com ssh-ed25519 {KEY}\n");
        assert_eq!(check(&file, "git.example.com", None, &key()), HostKey::Known);
    }

    #[test]
    fn wildcards_and_negation() {
        let file = format!("*.example.com,!bastion.example.com ssh-ed25519 {KEY}\n10.0.0.? ssh-ed25519 {KEY}\n");
        assert_eq!(check(&file, "git.example.com", None, &key()), HostKey::Known);
        assert_eq!(check(&file, "bastion.example.com", None, &key()), HostKey::Unknown);
        assert_eq!(check(&file, "10.0.0.7", None, &key()), HostKey::Known);
        assert_eq!(check(&file, "10.0.0.17", None, &key()), HostKey::Unknown);
        let recorded = line("git.example.org", Some(2222), "ssh-ed25519", &key());
        assert_eq!(check(&recorded, "git.example.org", Some(2222), &key()), HostKey::Known);
    }

    #[test]
    fn base64_round_trip() {
        for bytes in [&b""[..], b"a", b"ab", b"abc", b"abcd"] {
            assert_eq!(decode_base64(&encode_base64(bytes)).unwrap(), bytes);
        }
    }
}
