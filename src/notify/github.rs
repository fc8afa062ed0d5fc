//! The GitHub channel: the commit's deployment to the environment, and each event as one of its
//! statuses (`in_progress`, `queued`, `success`, `failure`, `error`) with a `log_url` to the agent
//! — so a pull request shows where its merge is deployed. The deployment is made once per
//! commit and environment and remembered in the ledger; after a crash between making it and
//! remembering it, the one plumb made is found again (by its payload) instead of made twice.

use serde_json::{Value, json};

use super::http::{Answer, Client, Sent};
use super::notice::{Event, Notice};
use crate::ledger::Recorder;
use crate::secret::Secret;

/// GitHub's REST API for one repository.
pub struct Github {
    /// The channel's name (deployments are remembered under it).
    pub channel: String,
    /// The token.
    pub token: Secret,
    /// `owner/name`.
    pub repository: String,
    /// The API's root.
    pub api: String,
    /// The client.
    pub client: Client,
}

/// The deployment status an event shows.
pub fn state(event: Event) -> Option<&'static str> {
    match event {
        Event::Started => Some("in_progress"),
        Event::Waiting => Some("queued"),
        Event::Succeeded => Some("success"),
        Event::RolledBack | Event::Refused => Some("failure"),
        Event::Failed => Some("error"),
        Event::Drift | Event::Test => None,
    }
}

impl Github {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, String> {
        let authorization = format!("Bearer {}", self.token.expose());
        let headers = [
            ("authorization", authorization.as_str()),
            ("accept", "application/vnd.github+json"),
            ("x-github-api-version", "2022-11-28"),
            ("content-type", "application/json"),
        ];
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let url = format!("{}/repos/{}{path}", self.api, self.repository);
        self.client.send(method, &url, &headers, body).await
    }

    /// Shows `notice` as a status of its commit's deployment.
    pub async fn send(&self, notice: &Notice, ledger: &Recorder) -> Sent {
        let Some(state) = state(notice.event) else {
            return Sent::Delivered(format!("GitHub shows no `{}` event", notice.event.name()));
        };
        let deployment = match self.deployment(notice, ledger).await {
            Ok(deployment) => deployment,
            Err(sent) => return sent,
        };
        let mut description: String = notice.summary.chars().take(140).collect();
        if let Some(reason) = &notice.reason {
            let room = 140usize.saturating_sub(description.chars().count() + 2);
            if room > 10 {
                description = format!("{description}: {}", reason.chars().take(room).collect::<String>());
            }
        }
        let mut status = json!({
            "state": state,
            "description": description,
            "environment": notice.environment,
            "auto_inactive": true,
        });
        if let Some(url) = &notice.url {
            status["log_url"] = json!(url);
        }
        match self
            .call("POST", &format!("/deployments/{deployment}/statuses"), Some(&status))
            .await
        {
            Ok(answer) => answer.sorted(),
            Err(e) => Sent::Retry(e, None),
        }
    }

    /// The id of the commit's deployment to the environment: remembered, found, or made.
    async fn deployment(&self, notice: &Notice, ledger: &Recorder) -> Result<String, Sent> {
        let (channel, environment, commit) = (
            self.channel.clone(),
            notice.environment.clone(),
            notice.commit.id.clone(),
        );
        let lost =
            |e: crate::ledger::LedgerError| Sent::Retry(format!("the ledger: {}", crate::error::chain(&e)), None);
        let known = {
            let (channel, environment, commit) = (channel.clone(), environment.clone(), commit.clone());
            ledger
                .call(move |l| l.forge_deployment(&channel, &environment, &commit))
                .await
                .map_err(lost)?
        };
        if let Some(id) = known {
            return Ok(id);
        }
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("sha", &commit)
            .append_pair("environment", &environment)
            .append_pair("per_page", "100")
            .finish();
        let listed = self
            .call("GET", &format!("/deployments?{query}"), None)
            .await
            .map_err(|e| Sent::Retry(e, None))?;
        let found = match listed.sorted() {
            Sent::Delivered(_) => serde_json::from_str::<Value>(&listed.body).ok().and_then(|list| {
                list.as_array()
                    .and_then(|list| list.iter().find(|d| made_by_plumb(d)).cloned())
            }),
            other => return Err(other),
        };
        let deployment = match found {
            Some(deployment) => deployment,
            None => {
                let body = json!({
                    "ref": commit,
                    "environment": environment,
                    "description": format!("plumb deploys {} to {environment}", notice.commit.short),
                    "auto_merge": false,
                    "required_contexts": [],
                    "payload": { "plumb": { "environment": environment } },
                    "production_environment": environment == "production",
                });
                let made = self
                    .call("POST", "/deployments", Some(&body))
                    .await
                    .map_err(|e| Sent::Retry(e, None))?;
                match made.sorted() {
                    Sent::Delivered(_) => serde_json::from_str(&made.body).unwrap_or(Value::Null),
                    other => return Err(other),
                }
            }
        };
        let Some(id) = deployment["id"].as_i64().map(|id| id.to_string()) else {
            return Err(Sent::Retry("GitHub's answer names no deployment id".to_owned(), None));
        };
        let kept = id.clone();
        ledger
            .call(move |l| l.keep_forge_deployment(&channel, &environment, &commit, &kept))
            .await
            .map_err(lost)?;
        Ok(id)
    }

    /// Reads the repository (what `plumb notify test` shows): whether the token reaches it and
    /// what it may do there.
    pub async fn test(&self) -> Result<Answer, String> {
        self.call("GET", "", None).await
    }
}

/// Whether a listed deployment is one plumb made (its payload says so).
fn made_by_plumb(deployment: &Value) -> bool {
    match &deployment["payload"] {
        Value::Object(payload) => payload.contains_key("plumb"),
        // Older API versions return the payload as a string.
        Value::String(text) => serde_json::from_str::<Value>(text).is_ok_and(|p| p.get("plumb").is_some()),
        _ => false,
    }
}
