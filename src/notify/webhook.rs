//! The webhook channel: `POST` of the notification's JSON exactly as queued, signed with
//! HMAC-SHA256 over those bytes (`X-Plumb-Signature-256: sha256=<hex>`), with its delivery id
//! (`X-Plumb-Delivery`, the same on every retry) and event (`X-Plumb-Event`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::http::{Client, Sent};
use crate::ledger::Message;
use crate::secret::Secret;

/// A webhook receiver.
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    /// The signing key.
    pub secret: Secret,
    /// The client.
    pub client: Client,
}

impl Webhook {
    /// Posts `message`.
    pub async fn send(&self, message: &Message) -> Sent {
        let body = message.body.as_bytes();
        let signature = format!("sha256={}", signature(self.secret.expose().as_bytes(), body));
        let headers = [
            ("content-type", "application/json"),
            ("x-plumb-event", message.event.as_str()),
            ("x-plumb-delivery", message.delivery.as_str()),
            ("x-plumb-signature-256", signature.as_str()),
        ];
        match self.client.send("POST", &self.url, &headers, body.to_vec()).await {
            Ok(answer) => answer.sorted(),
            Err(e) => Sent::Retry(e, None),
        }
    }
}

/// The hex HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_the_rfc_4231_hmac() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::signature(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
