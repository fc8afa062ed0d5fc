//! `plumb review --post github|gitlab`: the review's comment on the pull request, posted with the
//! forge's REST API from the variables its CI sets — one comment, found by its first line
//! ([`super::review::MARKER`]) and updated in place on each push, never repeated (a comment
//! that starts the same way but is not ours to edit gets a new one beside it). A review longer
//! than the forge takes is cut, saying so.
//!
//! GitHub Actions: `GITHUB_API_URL`, `GITHUB_REPOSITORY`, the pull request's number from
//! `GITHUB_EVENT_PATH` (or `--pull`), a token in `GITHUB_TOKEN` (or `GH_TOKEN`) with
//! `pull-requests: write`. GitLab CI: `CI_API_V4_URL`, `CI_PROJECT_ID`, `CI_MERGE_REQUEST_IID`
//! (or `--pull`), a token with `api` scope in `PLUMB_GITLAB_TOKEN`.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::review::MARKER;
use crate::notify::http::Client;

/// The forges a comment is posted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Forge {
    /// A pull request's issue comment (GitHub or GitHub Enterprise).
    Github,
    /// A merge request's note (GitLab).
    Gitlab,
}

/// Comments read per page while looking for ours.
const PAGE: usize = 100;
/// The most pages read (10,000 comments).
const PAGES: usize = 100;
/// The most bytes one page may hold.
const PAGE_BYTES: usize = 16 << 20;

/// Where and how to post: the comments' collection, one comment's URL, the headers.
struct Thread {
    comments: String,
    one: Box<dyn Fn(u64) -> String>,
    update: &'static str,
    headers: Vec<(&'static str, String)>,
    /// The longest comment the forge takes, in characters.
    most: usize,
}

/// `body`, cut on a character boundary to `most` characters with a note saying so.
fn within(body: &str, most: usize) -> String {
    const CUT: &str = "\n\n… cut here: the whole review is in the job's log and summary.\n";
    if body.chars().count() <= most {
        return body.to_owned();
    }
    let keep: String = body.chars().take(most - CUT.chars().count()).collect();
    keep + CUT
}

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .with_context(|| format!("`{name}` is not set (the forge's CI sets it)"))
}

impl Thread {
    fn of(forge: Forge, pull: Option<u64>) -> anyhow::Result<Thread> {
        match forge {
            Forge::Github => {
                let api = std::env::var("GITHUB_API_URL").unwrap_or_else(|_| "https://api.github.com".to_owned());
                let api = api.trim_end_matches('/').to_owned();
                let repository = var("GITHUB_REPOSITORY")?;
                let pull = match pull {
                    Some(pull) => pull,
                    None => pull_of_event()?,
                };
                let token = var("GITHUB_TOKEN").or_else(|_| var("GH_TOKEN"))?;
                let base = format!("{api}/repos/{repository}/issues");
                Ok(Thread {
                    comments: format!("{base}/{pull}/comments"),
                    one: Box::new(move |id| format!("{base}/comments/{id}")),
                    update: "PATCH",
                    most: 65_536,
                    headers: vec![
                        ("authorization", format!("Bearer {token}")),
                        ("accept", "application/vnd.github+json".to_owned()),
                        ("x-github-api-version", "2022-11-28".to_owned()),
                    ],
                })
            }
            Forge::Gitlab => {
                let api = var("CI_API_V4_URL")?.trim_end_matches('/').to_owned();
                let project = var("CI_PROJECT_ID")?;
                let pull = match pull {
                    Some(pull) => pull.to_string(),
                    None => var("CI_MERGE_REQUEST_IID")?,
                };
                let token = var("PLUMB_GITLAB_TOKEN")?;
                let notes = format!("{api}/projects/{project}/merge_requests/{pull}/notes");
                let one = notes.clone();
                Ok(Thread {
                    comments: notes,
                    one: Box::new(move |id| format!("{one}/{id}")),
                    update: "PUT",
                    most: 1_000_000,
                    headers: vec![("private-token", token)],
                })
            }
        }
    }
}

/// The pull request's number in the event GitHub Actions ran for.
fn pull_of_event() -> anyhow::Result<u64> {
    let path = var("GITHUB_EVENT_PATH")?;
    let event: Value = serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("cannot read {path}"))?)
        .with_context(|| format!("{path} is not JSON"))?;
    event["pull_request"]["number"]
        .as_u64()
        .or_else(|| event["number"].as_u64())
        .with_context(|| format!("the event in {path} is not a pull request's (give --pull)"))
}

/// Posts `body` as the review's comment on `forge`, updating the one already there; what was
/// done, in words.
pub fn post(forge: Forge, pull: Option<u64>, body: &str) -> anyhow::Result<String> {
    let thread = Thread::of(forge, pull)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = Client::new(None).map_err(anyhow::Error::msg)?;
        let headers: Vec<(&str, &str)> = thread.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let existing = find(&client, &thread.comments, &headers).await?;
        let mut sending = headers.clone();
        sending.push(("content-type", "application/json"));
        let payload = serde_json::to_vec(&json!({ "body": within(body, thread.most) }))?;
        if let Some(id) = existing {
            let url = (thread.one)(id);
            let answer = client
                .send(thread.update, &url, &sending, payload.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{} {url}: {e}", thread.update))?;
            match answer.status {
                200..=299 => return Ok(format!("updated comment {id}")),
                // Not ours to edit (another author's comment that starts the same way): a new
                // one is posted instead.
                403 | 404 => {}
                _ => bail!("{} {url}: {}", thread.update, answer.said()),
            }
        }
        let answer = client
            .send("POST", &thread.comments, &sending, payload)
            .await
            .map_err(|e| anyhow::anyhow!("POST {}: {e}", thread.comments))?;
        if !(200..300).contains(&answer.status) {
            bail!("POST {}: {}", thread.comments, answer.said());
        }
        Ok("posted the comment".to_owned())
    })
}

/// The id of the comment whose body starts with the marker, looking page by page.
async fn find(client: &Client, comments: &str, headers: &[(&str, &str)]) -> anyhow::Result<Option<u64>> {
    for page in 1..=PAGES {
        let url = format!("{comments}?per_page={PAGE}&page={page}");
        let answer = client
            .fetch(&url, headers, PAGE_BYTES)
            .await
            .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
        if answer.status != 200 {
            bail!(
                "GET {url}: HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        }
        let listed: Vec<Value> =
            serde_json::from_slice(&answer.body).with_context(|| format!("GET {url}: not a list of comments"))?;
        if let Some(id) = listed
            .iter()
            .find(|c| c["body"].as_str().is_some_and(|b| b.starts_with(MARKER)))
            .and_then(|c| c["id"].as_u64())
        {
            return Ok(Some(id));
        }
        if listed.len() < PAGE {
            return Ok(None);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_review_is_cut_on_a_character_boundary() {
        assert_eq!(within("short", 100), "short");
        let long = "é".repeat(200);
        let cut = within(&long, 100);
        assert_eq!(cut.chars().count(), 100);
        assert!(cut.starts_with("éé") && cut.ends_with("summary.\n"), "{cut}");
    }
}
