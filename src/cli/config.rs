//! `plumb config get`: a service's configuration as an environment renders it, each value with
//! the file and line that wrote it (the service's file, the environment's overlay, the
//! repository's defaults).

use std::io::Write;

use anstyle::{AnsiColor, Style};
use serde_json::{Value, json};

use super::{Format, Outcome, RepoArgs, report};
use crate::appconfig::{at_path, clear, masked};
use crate::spec::node::Node;
use crate::{source, spec};

const ORIGIN: Style = AnsiColor::Blue.on_default();

#[derive(clap::Args)]
pub struct GetArgs {
    /// The repository (or the config folder inside it).
    #[arg(long, default_value = ".")]
    repo: std::path::PathBuf,
    /// Read this revision from git's object database instead of the files on disk.
    #[arg(long)]
    rev: Option<String>,
    /// A file of age identities (repeat for several): encrypted values are opened and printed
    /// in clear. Every one must open.
    #[arg(long = "identity", value_name = "FILE")]
    identities: Vec<std::path::PathBuf>,
    /// The environment.
    #[arg(long)]
    env: String,
    /// The service.
    #[arg(long)]
    service: String,
    /// Only this part: keys joined by dots, array items by index (`database.pool`).
    path: Option<String>,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    output: Format,
}

/// One value printed: where in the configuration, the value, and the file and line that wrote it.
struct Leaf {
    path: String,
    value: Value,
    origin: Option<(String, u32)>,
}

pub fn get(args: &GetArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let (env, name) = (&args.env, &args.service);
    let at = RepoArgs {
        repo: args.repo.clone(),
        rev: args.rev.clone(),
        identities: args.identities.clone(),
    };
    let rendered = super::render(&at, Some(env))?;
    if !rendered.is_valid() {
        report::validation(&mut anstream::stderr().lock(), &rendered, Format::Text)?;
        return Ok(Outcome::Found);
    }
    let Some(service) = rendered.environments[env]
        .services
        .iter()
        .find_map(|(n, s)| (n.as_str() == name).then_some(s))
    else {
        anyhow::bail!("environment `{env}` has no enabled service named `{name}`");
    };
    // Decrypted values only when the identities to open them were given for that purpose.
    let values = if at.identities.is_empty() {
        masked(service)
    } else {
        clear(service)
    }
    .unwrap_or_else(|| json!({}));
    let path = args.path.clone().unwrap_or_default();
    let Some(value) = at_path(&values, &path) else {
        anyhow::bail!("the configuration of `{name}` in `{env}` has nothing at `{path}`");
    };
    let tree = source::open(&at.repo, at.rev.as_deref())?;
    let document = spec::service_origins(tree.as_ref(), env, name)?;
    let node = document
        .as_ref()
        .and_then(|d| d.get("config"))
        .and_then(|c| c.get("values"))
        .and_then(|v| node_at(v, &path));
    let mut leaves = Vec::new();
    collect(&path, value, node, &mut leaves);
    match args.output {
        Format::Json => {
            let leaves: Vec<Value> = leaves
                .iter()
                .map(|l| {
                    json!({
                        "path": l.path,
                        "value": l.value,
                        "file": l.origin.as_ref().map(|o| &o.0),
                        "line": l.origin.as_ref().map(|o| o.1),
                    })
                })
                .collect();
            let body = json!({"environment": env, "service": name, "path": path, "value": value, "leaves": leaves});
            writeln!(out, "{}", serde_json::to_string_pretty(&body)?)?;
        }
        Format::Text | Format::Markdown | Format::Manifests => {
            let width = leaves.iter().map(|l| l.path.len()).max().unwrap_or(0);
            for leaf in &leaves {
                let origin = leaf
                    .origin
                    .as_ref()
                    .map(|(file, line)| format!("  {}{file}:{line}{}", ORIGIN.render(), ORIGIN.render_reset()))
                    .unwrap_or_default();
                let path = if leaf.path.is_empty() { "(all)" } else { &leaf.path };
                writeln!(out, "{path:width$} = {}{origin}", leaf.value)?;
            }
        }
    }
    Ok(Outcome::Ok)
}

/// The node at `path` under `node`, as [`at_path`] finds values.
fn node_at<'a>(node: &'a Node, path: &str) -> Option<&'a Node> {
    if path.is_empty() {
        return Some(node);
    }
    path.split('.').try_fold(node, |node, key| match node.get(key) {
        Some(found) => Some(found),
        None => node.get_index(key.parse().ok()?),
    })
}

/// Every leaf of `value` (an object's members, recursively; anything else whole) at `path`,
/// with the line of `node` that wrote it.
fn collect(path: &str, value: &Value, node: Option<&Node>, leaves: &mut Vec<Leaf>) {
    if let Value::Object(members) = value
        && !members.is_empty()
    {
        for (key, member) in members {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            collect(&here, member, node.and_then(|n| n.get(key)), leaves);
        }
        return;
    }
    leaves.push(Leaf {
        path: path.to_owned(),
        value: value.clone(),
        origin: node.map(|n| (n.at.file.to_string(), n.at.line)),
    });
}
