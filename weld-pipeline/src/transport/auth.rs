//! The shared-secret proof every network transport uses: a random challenge answered with an
//! HMAC, so the secret never crosses the wire.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a challenge.
pub const CHALLENGE_LEN: usize = 32;

/// A shared secret: a worker must prove it knows it to connect. It never crosses the wire, and
/// `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// A secret from its bytes (the value of `WELD_SHARED_SECRET`).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Secret(secret.as_ref().into())
    }

    fn mac(&self, challenge: &[u8], worker_id: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(challenge);
        // Length-prefixed, so that no (challenge, id) pair signs the same bytes as another.
        mac.update(&(worker_id.len() as u64).to_be_bytes());
        mac.update(worker_id.as_bytes());
        mac
    }

    /// The worker's answer to a challenge: HMAC-SHA256(secret, challenge ‖ len(id) ‖ id).
    pub fn prove(&self, challenge: &[u8], worker_id: &str) -> Vec<u8> {
        self.mac(challenge, worker_id)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// Whether an answer proves the secret, compared in constant time.
    pub fn verify(&self, challenge: &[u8], worker_id: &str, answer: &[u8]) -> bool {
        self.mac(challenge, worker_id).verify_slice(answer).is_ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A fresh random challenge (or session token), from the operating system's generator.
///
/// # Panics
///
/// When the operating system has no random source, which no supported platform lacks.
pub fn random_bytes() -> [u8; CHALLENGE_LEN] {
    let mut bytes = [0u8; CHALLENGE_LEN];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_with_the_same_secret_challenge_and_worker() {
        let secret = Secret::new("s3cret");
        let challenge = random_bytes();
        let answer = secret.prove(&challenge, "worker-1");
        assert!(secret.verify(&challenge, "worker-1", &answer));
        assert!(!Secret::new("other").verify(&challenge, "worker-1", &answer));
        assert!(!secret.verify(&challenge, "worker-2", &answer));
        assert!(!secret.verify(&random_bytes(), "worker-1", &answer));
        assert!(!format!("{secret:?}").contains("s3cret"));
    }

    /// The documented input: challenge, the worker id's length as u64 big-endian, the id.
    #[test]
    fn the_proof_is_the_hmac_of_the_documented_bytes() {
        let challenge = [7u8; CHALLENGE_LEN];
        let mut input = challenge.to_vec();
        input.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        input.extend_from_slice(b"w1");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(&input);
        let expected = mac.finalize().into_bytes().to_vec();
        assert_eq!(Secret::new("s3cret").prove(&challenge, "w1"), expected);
    }
}
