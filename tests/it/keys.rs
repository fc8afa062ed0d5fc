//! OpenPGP keys generated in the test, signatures made in-process, and signing policies written
//! from them: trusted, untrusted, expired, revoked (soft and hard), SHA-1.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::packet::signature::SignatureBuilder;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::{Serialize, SerializeInto};
use sequoia_openpgp::types::{HashAlgorithm, ReasonForRevocation, SignatureType};
use sequoia_openpgp::{Packet, armor};

/// When test keys are made: before every commit of a `TestRepo`.
pub const KEYS_CREATED: i64 = 1_600_000_000;

pub fn at(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix as u64)
}

/// A certificate with its secret keys.
#[derive(Clone)]
pub struct TestKey {
    pub name: String,
    pub cert: Cert,
}

impl TestKey {
    /// A key that never expires.
    pub fn new(name: &str) -> TestKey {
        TestKey::build(name, None)
    }

    /// A key that expires at `unix`.
    pub fn expiring_at(name: &str, unix: i64) -> TestKey {
        TestKey::build(name, Some(Duration::from_secs((unix - KEYS_CREATED) as u64)))
    }

    fn build(name: &str, validity: Option<Duration>) -> TestKey {
        let (cert, _) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_creation_time(at(KEYS_CREATED))
            .set_validity_period(validity)
            .add_userid(format!("{name} <{name}@example.com>"))
            .add_signing_subkey()
            .generate()
            .expect("a certificate");
        TestKey {
            name: name.to_owned(),
            cert,
        }
    }

    /// This key with a revocation made at `unix`: hard (compromised) or soft (retired).
    pub fn revoked(&self, hard: bool, unix: i64) -> TestKey {
        let mut signer = self.primary_signer();
        let reason = if hard {
            ReasonForRevocation::KeyCompromised
        } else {
            ReasonForRevocation::KeyRetired
        };
        let revocation = CertRevocationBuilder::new()
            .set_signature_creation_time(at(unix))
            .unwrap()
            .set_reason_for_revocation(reason, b"test")
            .unwrap()
            .build(&mut signer, &self.cert, None)
            .unwrap();
        TestKey {
            name: self.name.clone(),
            cert: self.cert.clone().insert_packets(revocation).unwrap().0,
        }
    }

    /// This key with its signing subkey revoked as compromised at `unix`.
    pub fn subkey_compromised(&self, unix: i64) -> TestKey {
        let mut signer = self.primary_signer();
        let subkey = self
            .cert
            .keys()
            .subkeys()
            .next()
            .expect("a signing subkey")
            .key()
            .clone();
        let revocation = SubkeyRevocationBuilder::new()
            .set_signature_creation_time(at(unix))
            .unwrap()
            .set_reason_for_revocation(ReasonForRevocation::KeyCompromised, b"test")
            .unwrap()
            .build(&mut signer, &self.cert, &subkey, None)
            .unwrap();
        TestKey {
            name: self.name.clone(),
            cert: self.cert.clone().insert_packets(revocation).unwrap().0,
        }
    }

    /// This key with a new user ID self-signed at `unix` (a fresher self-signature).
    pub fn with_user_id(&self, user_id: &str, unix: i64) -> TestKey {
        let mut signer = self.primary_signer();
        let user_id = sequoia_openpgp::packet::UserID::from(user_id);
        let binding = user_id
            .bind(
                &mut signer,
                &self.cert,
                SignatureBuilder::new(SignatureType::PositiveCertification)
                    .set_signature_creation_time(at(unix))
                    .unwrap(),
            )
            .unwrap();
        let packets: Vec<Packet> = vec![user_id.into(), binding.into()];
        TestKey {
            name: self.name.clone(),
            cert: self.cert.clone().insert_packets(packets).unwrap().0,
        }
    }

    fn primary_signer(&self) -> sequoia_openpgp::crypto::KeyPair {
        self.cert
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap()
    }

    /// The public certificate, armored.
    pub fn public(&self) -> String {
        String::from_utf8(self.cert.armored().to_vec().unwrap()).unwrap()
    }

    /// An armored detached signature over `data`, made at `unix` with `hash`.
    pub fn sign(&self, data: &[u8], unix: i64, hash: HashAlgorithm) -> String {
        let policy = StandardPolicy::new();
        let mut keypair = self
            .cert
            .keys()
            .with_policy(&policy, at(KEYS_CREATED + 1))
            .for_signing()
            .secret()
            .next()
            .expect("a signing key")
            .key()
            .clone()
            .into_keypair()
            .unwrap();
        let signature = SignatureBuilder::new(SignatureType::Binary)
            .set_signature_creation_time(at(unix))
            .unwrap()
            .set_hash_algo(hash)
            .sign_message(&mut keypair, data)
            .unwrap();
        let mut writer = armor::Writer::new(Vec::new(), armor::Kind::Signature).unwrap();
        Packet::from(signature).serialize(&mut writer).unwrap();
        String::from_utf8(writer.finalize().unwrap()).unwrap()
    }
}

/// An `openpgp-policy.toml` granting each key the listed capabilities.
pub fn policy(users: &[(&TestKey, &[&str])]) -> String {
    let entries: Vec<(&str, &[&str], Vec<&TestKey>)> = users
        .iter()
        .map(|(key, caps)| (key.name.as_str(), *caps, vec![*key]))
        .collect();
    policy_entries(&entries)
}

/// An `openpgp-policy.toml` with named users, each with capabilities and certificates.
pub fn policy_entries(users: &[(&str, &[&str], Vec<&TestKey>)]) -> String {
    let mut text = String::from("version = 0\ncommit_goodlist = []\n");
    for (name, capabilities, keys) in users {
        text.push_str(&format!("\n[authorization.{name}]\n"));
        for capability in *capabilities {
            text.push_str(&format!("{capability} = true\n"));
        }
        let keyring: String = keys.iter().map(|k| k.public()).collect();
        text.push_str(&format!("keyring = \"\"\"\n{keyring}\"\"\"\n"));
    }
    text
}

/// Every capability.
pub const ALL: &[&str] = &[
    "sign_commit",
    "sign_tag",
    "sign_archive",
    "add_user",
    "retire_user",
    "audit",
];
