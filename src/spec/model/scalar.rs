//! The small value types of the repository format — names, durations, resource quantities,
//! environment values, encrypted values — each with the JSON Schema that editors and the
//! validator check. They do not know which document uses them.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name usable as a Kubernetes object, a Compose service and a file name: lowercase letters,
/// digits and `-`, starting and ending with a letter or digit, at most 63 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    /// The pattern a name matches.
    pub const PATTERN: &'static str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

    /// Checks `s` and wraps it.
    pub fn parse(s: &str) -> Result<Name, String> {
        let ok = (1..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(Name(s.to_owned()))
        } else {
            Err(format!(
                "`{s}` is not a valid name: use lowercase letters, digits and `-`, at most 63 characters"
            ))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Name {
    fn schema_name() -> Cow<'static, str> {
        "Name".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": Name::PATTERN,
            "description": "Lowercase letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters."
        })
    }
}

/// A length of time written as `90s`, `5m`, `1h30m` or `250ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The pattern a duration matches.
    pub const PATTERN: &'static str = "^([0-9]+(ms|s|m|h|d))+$";

    /// `n` seconds.
    pub const fn secs(n: u64) -> Self {
        Duration(std::time::Duration::from_secs(n))
    }

    /// Parses `1h30m`-style text.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let bad = || format!("`{text}` is not a duration: write it as `90s`, `5m`, `1h30m` or `250ms`");
        let mut total: u64 = 0;
        let mut rest = text;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let millis = match &rest[..unit] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit..];
            total = number
                .checked_mul(millis)
                .and_then(|n| total.checked_add(n))
                .ok_or_else(bad)?;
        }
        Ok(Duration(std::time::Duration::from_millis(total)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": Duration::PATTERN,
            "description": "A length of time: `90s`, `5m`, `1h30m`, `250ms`.",
            "examples": ["30s", "5m", "1h30m"]
        })
    }
}

/// A value that YAML may write as a string, a number or a boolean, kept as the text a process
/// or a container receives (environment values, resource quantities).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Text(s)),
            serde_json::Value::Number(n) => Ok(Text(n.to_string())),
            serde_json::Value::Bool(b) => Ok(Text(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string, number or boolean, found {other}"
            ))),
        }
    }
}

impl JsonSchema for Text {
    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "number", "boolean"],
            "description": "Text; numbers and booleans are accepted and passed on as written."
        })
    }
}

/// A CPU or memory amount in Kubernetes notation: `250m`, `0.5`, `2` CPUs; `512Mi`, `1Gi` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(pub Text);

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "number"],
            "pattern": "^[0-9]+(\\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$",
            "description": "An amount: CPUs as `250m`, `0.5` or `2`; memory as `512Mi` or `1Gi`."
        })
    }
}

impl Quantity {
    /// The number and its suffix (`250m` → 250, `m`).
    fn split(&self) -> Option<(f64, &str)> {
        let text = self.0.0.as_str();
        let at = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        Some((text[..at].parse().ok()?, &text[at..]))
    }

    /// As CPUs in billionths (`250m` → 250,000,000); `None` for a memory suffix.
    pub fn nano_cpus(&self) -> Option<u64> {
        let (number, suffix) = self.split()?;
        let cpus = match suffix {
            "" => number,
            "m" => number / 1000.0,
            _ => return None,
        };
        Some((cpus * 1e9).round() as u64)
    }

    /// As bytes (`256Mi` → 268,435,456); `None` for a CPU suffix.
    pub fn bytes(&self) -> Option<u64> {
        let (number, suffix) = self.split()?;
        let unit: f64 = match suffix {
            "" => 1.0,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "Ki" => 1024.0,
            "Mi" => 1024.0 * 1024.0,
            "Gi" => 1024.0 * 1024.0 * 1024.0,
            "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        };
        Some((number * unit).round() as u64)
    }
}

/// The prefix of an encrypted value.
pub const ENCRYPTED_PREFIX: &str = "ENC[";

/// Whether a string is an encrypted value (`ENC[<scheme>,<ciphertext>]`), which plumb never
/// prints and never validates before decryption.
pub fn is_encrypted(s: &str) -> bool {
    s.starts_with(ENCRYPTED_PREFIX) && s.ends_with(']')
}

/// How an encrypted value is shown: its scheme, never its ciphertext.
pub fn mask(s: &str) -> String {
    let scheme = s[ENCRYPTED_PREFIX.len()..].split(',').next().unwrap_or("");
    format!("<encrypted:{scheme}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for text in ["90s", "5m", "1h30m", "250ms", "2d", "0s"] {
            let d = Duration::parse(text).unwrap();
            assert_eq!(Duration::parse(&d.to_string()).unwrap(), d, "{text}");
        }
        assert_eq!(Duration::parse("1h30m").unwrap(), Duration::secs(5400));
        assert_eq!(Duration::parse("90s").unwrap().to_string(), "1m30s");
        for bad in ["", "5", "m", "5 m", "1y", "-1s", "99999999999999999999d"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_follow_dns_labels() {
        assert!(Name::parse("twikit-backend").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encrypted_values_are_masked_by_scheme() {
        assert!(is_encrypted("ENC[age,YWJj]"));
        assert!(!is_encrypted("ENC"));
        assert_eq!(mask("ENC[age,YWJj]"), "<encrypted:age>");
    }
}
