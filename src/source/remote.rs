//! Where a config repository is fetched from and how plumb proves who it is to the host and
//! checks who the host is: a token over HTTPS, a key over SSH with `known_hosts` checking, nothing
//! for `file://` URLs and local paths.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

use super::known_hosts::{self, HostKey};
use crate::secret::Secret;

/// A repository to fetch.
#[derive(Clone, Debug)]
pub struct Remote {
    /// `https://…`, `ssh://…` or `user@host:path`, `file://…`, `git://…`, or a local path.
    pub url: String,
    /// How to authenticate.
    pub auth: Auth,
    /// Limits on every network operation.
    pub timeouts: Timeouts,
}

/// Adds the certificate authorities in `file` (PEM, several concatenated) to those HTTPS
/// remotes are checked against, beside the system's: for a forge behind a private CA. The list
/// is one per process (libgit2 keeps one TLS context), so an authority added for one repository
/// is trusted for every HTTPS remote of the agent.
pub fn trust_authorities(file: &std::path::Path) -> Result<(), git2::Error> {
    static ADDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ADDING.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: libgit2's global options are not synchronized; the lock above serializes every
    // change plumb makes, and no other code of plumb sets them.
    unsafe { git2::opts::set_ssl_cert_file(file) }
}

impl Remote {
    /// A remote needing no credentials (`file://`, a local path, an anonymous server).
    pub fn anonymous(url: impl Into<String>) -> Self {
        Remote {
            url: url.into(),
            auth: Auth::None,
            timeouts: Timeouts::default(),
        }
    }

    /// The URL without credentials, for messages: no user or token for HTTP (tokens are often
    /// written as the user), the user alone for SSH.
    pub fn display_url(&self) -> String {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.url.clone();
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        match authority.rsplit_once('@') {
            Some((userinfo, host)) if scheme == "ssh" => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}{path}")
            }
            Some((_, host)) => format!("{scheme}://{host}{path}"),
            None => self.url.clone(),
        }
    }

    /// The SSH port named in an `ssh://host:port/` URL.
    fn ssh_port(&self) -> Option<u16> {
        let rest = self.url.strip_prefix("ssh://")?;
        let authority = rest.split('/').next()?;
        let host = authority.rsplit('@').next()?;
        host.rsplit_once(':')?.1.parse().ok()
    }
}

/// Credentials for a remote.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No credentials.
    None,
    /// HTTPS basic authentication with a token as the password (GitHub, GitLab, Gitea, Bitbucket
    /// all accept this form).
    Token {
        /// The user name the host expects (`x-access-token`, `oauth2`, the account name…).
        username: String,
        /// The token.
        token: Secret,
    },
    /// An SSH key; the host's key must be listed in `known_hosts`.
    Ssh {
        /// The private key file.
        private_key: PathBuf,
        /// Its passphrase, when it has one.
        passphrase: Option<Secret>,
        /// The OpenSSH `known_hosts` file the host's key must be listed in.
        known_hosts: PathBuf,
        /// Accept a host that `known_hosts` does not list (trust on first use). Off unless the
        /// operator turns it on; a *different* key for a listed host is refused regardless.
        accept_unknown_hosts: bool,
    },
}

/// Limits on network operations.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// Waiting for the server to send anything.
    pub idle: Duration,
    /// One whole fetch.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(300),
        }
    }
}

/// Why plumb itself stopped a network operation; libgit2 replaces a callback's message with a
/// generic one, so the reason travels beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Interruption {
    /// The deadline passed.
    TimedOut,
    /// The host's key was refused.
    HostKey(String),
    /// The host refused the credentials, or asked for ones not configured.
    Credentials(String),
}

/// Builds the callbacks for one network operation: credentials tried once (libgit2 would loop on
/// a wrong password), host keys checked, and the operation cancelled at `deadline`.
pub(super) fn callbacks<'a>(
    remote: &'a Remote,
    deadline: Instant,
    interrupted: &'a RefCell<Option<Interruption>>,
) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let stop = move |why: Interruption| {
        let message = match &why {
            Interruption::TimedOut => "deadline passed".to_owned(),
            Interruption::HostKey(m) | Interruption::Credentials(m) => m.clone(),
        };
        *interrupted.borrow_mut() = Some(why);
        git2::Error::from_str(&message)
    };
    let mut attempts = 0;
    callbacks.credentials(move |_url, username, allowed| {
        attempts += 1;
        if attempts > 1 {
            return Err(stop(Interruption::Credentials(
                "the host refused the configured credentials".to_owned(),
            )));
        }
        match &remote.auth {
            Auth::Token { username, token } if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                Cred::userpass_plaintext(username, token.expose())
            }
            Auth::Ssh {
                private_key,
                passphrase,
                ..
            } if allowed.contains(CredentialType::SSH_KEY) => Cred::ssh_key(
                username.unwrap_or("git"),
                None,
                private_key,
                passphrase.as_ref().map(Secret::expose),
            ),
            _ => Err(stop(Interruption::Credentials(format!(
                "the host asks for credentials ({allowed:?}) that are not configured for this repository"
            )))),
        }
    });
    callbacks.certificate_check(move |cert, host| {
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2 has already checked the chain against the system's CA store.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Auth::Ssh {
            known_hosts: path,
            accept_unknown_hosts,
            ..
        } = &remote.auth
        else {
            return Err(git2::Error::from_str(
                "an SSH remote needs an `ssh` key and a `known_hosts` file",
            ));
        };
        let Some(key) = hostkey.hostkey() else {
            return Err(stop(Interruption::HostKey(
                "the SSH host did not present a raw host key".to_owned(),
            )));
        };
        let listed = match std::fs::read_to_string(path) {
            Ok(listed) => listed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && *accept_unknown_hosts => String::new(),
            Err(e) => {
                return Err(stop(Interruption::HostKey(format!(
                    "cannot read known_hosts file {}: {e}",
                    path.display()
                ))));
            }
        };
        match known_hosts::check(&listed, host, remote.ssh_port(), key) {
            HostKey::Known => Ok(CertificateCheckStatus::CertificateOk),
            HostKey::Unknown if *accept_unknown_hosts => {
                // Trust on first use: the key is recorded, so every later connection is checked
                // against it like any listed key.
                let kind = hostkey.hostkey_type().map_or("unknown", |t| t.name());
                let entry = known_hosts::line(host, remote.ssh_port(), kind, key);
                let recorded = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .and_then(|mut file| std::io::Write::write_all(&mut file, entry.as_bytes()));
                if let Err(e) = recorded {
                    return Err(stop(Interruption::HostKey(format!(
                        "cannot record the key of {host} in {}: {e}",
                        path.display()
                    ))));
                }
                tracing::warn!(host, known_hosts = %path.display(), "Trusted and recorded an SSH host key seen for the first time.");
                Ok(CertificateCheckStatus::CertificateOk)
            }
            HostKey::Unknown => Err(stop(Interruption::HostKey(format!(
                "the SSH host {host} is not listed in {}; add its key (ssh-keyscan) after checking it",
                path.display()
            )))),
            HostKey::Mismatch => Err(stop(Interruption::HostKey(format!(
                "the SSH host key of {host} differs from the one listed in {}; refusing to connect",
                path.display()
            )))),
            HostKey::Revoked => Err(stop(Interruption::HostKey(format!(
                "the SSH host key of {host} is marked @revoked in {}",
                path.display()
            )))),
        }
    });
    let within = move || {
        let within = Instant::now() < deadline;
        if !within {
            *interrupted.borrow_mut() = Some(Interruption::TimedOut);
        }
        within
    };
    callbacks.transfer_progress(move |_| within());
    callbacks.sideband_progress(move |_| within());
    callbacks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_url_hides_tokens() {
        let remote = Remote::anonymous("https://bot:ghp_secret@github.com/acme/config.git");
        assert_eq!(remote.display_url(), "https://github.com/acme/config.git");
        let token_as_user = Remote::anonymous("https://ghp_secret@github.com/acme/config.git");
        assert_eq!(token_as_user.display_url(), "https://github.com/acme/config.git");
        assert_eq!(
            Remote::anonymous("ssh://git@host:2222/acme/config.git").ssh_port(),
            Some(2222)
        );
        assert_eq!(
            Remote::anonymous("file:///srv/config").display_url(),
            "file:///srv/config"
        );
    }
}
