//! The GitLab channel: each event as the commit's status named `plumb/<environment>` (`running`,
//! `pending`, `success`, `failed`) with a link to the agent, so a merge request shows where its
//! merge is deployed.

use serde_json::json;

use super::http::{Answer, Client, Sent};
use super::notice::{Event, Notice};
use crate::secret::Secret;

/// GitLab's REST API for one project.
pub struct Gitlab {
    /// The token.
    pub token: Secret,
    /// `group/name` or the numeric id.
    pub project: String,
    /// The API's root.
    pub api: String,
    /// The client.
    pub client: Client,
}

/// The commit status an event shows.
pub fn state(event: Event) -> Option<&'static str> {
    match event {
        Event::Started => Some("running"),
        Event::Waiting => Some("pending"),
        Event::Succeeded => Some("success"),
        Event::RolledBack | Event::Failed | Event::Refused => Some("failed"),
        Event::Drift | Event::Test => None,
    }
}

impl Gitlab {
    fn project_url(&self) -> String {
        let project: String = form_urlencoded::byte_serialize(self.project.as_bytes()).collect();
        format!("{}/projects/{project}", self.api)
    }

    /// Shows `notice` as the commit's status for its environment.
    pub async fn send(&self, notice: &Notice) -> Sent {
        let Some(state) = state(notice.event) else {
            return Sent::Delivered(format!("GitLab shows no `{}` event", notice.event.name()));
        };
        let mut body = json!({
            "state": state,
            "name": format!("plumb/{}", notice.environment),
            "description": notice.summary.chars().take(255).collect::<String>(),
        });
        if let Some(url) = &notice.url {
            body["target_url"] = json!(url);
        }
        let url = format!("{}/statuses/{}", self.project_url(), notice.commit.id);
        let headers = [
            ("private-token", self.token.expose()),
            ("content-type", "application/json"),
        ];
        match self
            .client
            .send("POST", &url, &headers, body.to_string().into_bytes())
            .await
        {
            // The status is already what it says (a retry after the first try went through).
            Ok(answer) if answer.status == 400 && answer.body.contains("Cannot transition status") => {
                Sent::Delivered(answer.said())
            }
            Ok(answer) => answer.sorted(),
            Err(e) => Sent::Retry(e, None),
        }
    }

    /// Reads the project (what `plumb notify test` shows).
    pub async fn test(&self) -> Result<Answer, String> {
        let headers = [("private-token", self.token.expose())];
        self.client.send("GET", &self.project_url(), &headers, Vec::new()).await
    }
}
