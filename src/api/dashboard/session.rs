//! Who is signed in to the dashboard: a session per sign-in with an access token, known by a
//! random id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` behind TLS), kept in memory
//! only (the agent's restart signs everyone out), for 12 hours at most. A session keeps the
//! token, never shown, and each action is authorized with it again, so a token the access
//! configuration no longer knows acts no more. Every form that acts carries the session's
//! anti-forgery token, compared in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

use crate::secret::{Secret, constant_time_eq};

/// The cookie's name.
const COOKIE: &str = "plumb_session";
/// How long a session lasts.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How many sessions are kept at once (the oldest goes first).
const MOST: usize = 1024;

/// A signed-in identity.
#[derive(Clone)]
pub struct Session {
    /// The identity's name.
    pub name: String,
    /// The token it signed in with.
    pub token: Secret,
    /// The anti-forgery token every action must carry.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether `given` is this session's anti-forgery token.
    pub fn forged(&self, given: Option<&str>) -> bool {
        !given.is_some_and(|given| constant_time_eq(given.as_bytes(), self.csrf.as_bytes()))
    }
}

/// The sessions of one agent.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `name` with `token`: its id, for the cookie.
    pub fn open(&self, name: &str, token: Secret) -> std::io::Result<String> {
        let id = hex::encode(crate::secret::random_bytes::<32>()?);
        let session = Session {
            name: name.to_owned(),
            token,
            csrf: hex::encode(crate::secret::random_bytes::<32>()?),
            expires: Instant::now() + LIFETIME,
        };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        live.retain(|_, s| s.expires > now);
        if live.len() >= MOST
            && let Some(oldest) = live.iter().min_by_key(|(_, s)| s.expires).map(|(id, _)| id.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), session);
        Ok(id)
    }

    /// The session the request's cookie names, while it lasts.
    pub fn of(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers)?;
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by comparing every id in constant time: the lookup tells nothing of how
        // close a guess came.
        live.iter()
            .find(|(known, _)| constant_time_eq(known.as_bytes(), id.as_bytes()))
            .map(|(_, session)| session)
            .filter(|session| session.expires > Instant::now())
            .cloned()
    }

    /// Ends the session the request's cookie names.
    pub fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        }
    }
}

/// The session id in the request's cookies.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The `Set-Cookie` value that holds `id` (empty and expired: signs out).
pub fn set_cookie(id: &str, secure: bool) -> String {
    let lifetime = if id.is_empty() { 0 } else { LIFETIME.as_secs() };
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={lifetime}{secure}")
}
