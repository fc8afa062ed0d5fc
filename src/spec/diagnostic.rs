//! What is wrong with a repository, said so an engineer can fix it: the file, line and column,
//! the JSON path inside the document, what is wrong, a hint, and the environments in which it
//! shows. It does not decide how diagnostics are printed beyond one plain line each.

use std::fmt;

use serde::Serialize;

use super::node::{Origin, Path};
use super::yaml::YamlError;

/// One problem found in a repository.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnostic {
    /// Repository-relative file.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// JSONPath inside the document (`$.strategy.canary.steps[0].weight`), when the problem
    /// is about a value rather than the whole file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The environments whose rendered state shows the problem; empty when it is in a file
    /// on its own, whatever the environment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic at `at`.
    pub fn new(at: &Origin, message: impl Into<String>) -> Self {
        Diagnostic {
            file: at.file.to_string(),
            line: at.line,
            column: at.column,
            path: None,
            message: message.into(),
            hint: None,
            environments: Vec::new(),
        }
    }

    /// With the JSON path of the value it is about.
    pub fn path(mut self, path: &Path) -> Self {
        self.path = Some(path.to_string());
        self
    }

    /// With a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Seen while rendering `environment`.
    pub fn environment(mut self, environment: &str) -> Self {
        self.environments = vec![environment.to_owned()];
        self
    }

    fn key(&self) -> (&str, u32, u32, &Option<String>, &str) {
        (&self.file, self.line, self.column, &self.path, &self.message)
    }
}

impl From<YamlError> for Diagnostic {
    fn from(e: YamlError) -> Self {
        let d = Diagnostic::new(&e.at, e.message);
        match e.hint {
            Some(hint) => d.hint(hint),
            None => d,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)?;
        if !self.environments.is_empty() {
            write!(f, " (in {})", self.environments.join(", "))?;
        }
        Ok(())
    }
}

/// Sorts diagnostics by file and position and folds the same problem seen in several
/// environments into one, listing the environments.
pub fn consolidate(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort_by(|a, b| a.key().cmp(&b.key()));
    let mut out: Vec<Diagnostic> = Vec::with_capacity(diagnostics.len());
    for d in diagnostics {
        match out.last_mut() {
            Some(last) if last.key() == d.key() => {
                for env in d.environments {
                    if !last.environments.contains(&env) {
                        last.environments.push(env);
                    }
                }
            }
            _ => out.push(d),
        }
    }
    out
}

/// Finds the known name closest to a misspelt one, for "did you mean" hints.
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_lowercase();
    known
        .into_iter()
        .map(|k| {
            let lower = k.to_lowercase();
            // An abbreviation (`prod` for `production`) counts as a near miss.
            let distance = if word.len() >= 3 && lower.starts_with(&word) {
                1
            } else {
                edit_distance(&word, &lower)
            };
            (distance, k)
        })
        .filter(|(d, k)| *d <= (k.len().max(word.len()) / 3).max(1))
        // On a tie, the name closest in length: `pol` is `poll` rather than `policyFile`.
        .min_by_key(|(d, k)| (*d, k.len().abs_diff(word.len())))
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names_only_near_misses() {
        let known = ["replicas", "ports", "healthChecks"];
        assert_eq!(closest("replcas", known), Some("replicas"));
        assert_eq!(closest("healthcheck", known), Some("healthChecks"));
        assert_eq!(closest("volumes", known), None);
        assert_eq!(closest("prod", ["development", "production"]), Some("production"));
    }

    #[test]
    fn the_same_problem_in_several_environments_is_reported_once() {
        let at = Origin {
            file: "services/api.yaml".into(),
            line: 3,
            column: 5,
        };
        let d = |env: &str| Diagnostic::new(&at, "bad").environment(env);
        let folded = consolidate(vec![d("staging"), d("production")]);
        assert_eq!(folded.len(), 1);
        assert_eq!(folded[0].environments, ["staging", "production"]);
    }
}
