//! GitHub's push event, signed with the webhook's shared secret, sent to an agent's
//! `/hooks/config` as the forge sends it.

use std::net::SocketAddr;

/// Tells the agent at `api` that `reference` moved to `after`; the agent must accept it.
pub async fn push(api: SocketAddr, secret: &str, reference: &str, after: &str) {
    let body = serde_json::json!({"ref": reference, "after": after}).to_string();
    let signature = format!(
        "sha256={}",
        plumb::notify::webhook::signature(secret.as_bytes(), body.as_bytes())
    );
    let headers = [
        ("X-GitHub-Event", "push".to_owned()),
        ("X-GitHub-Delivery", format!("{after}-delivery")),
        ("X-Hub-Signature-256", signature),
        ("Content-Type", "application/json".to_owned()),
    ];
    let answer = crate::http::post(api, "/hooks/config", &headers, body.as_bytes()).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
}
