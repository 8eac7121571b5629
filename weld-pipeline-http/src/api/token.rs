//! The API's bearer token (`WELD_API_TOKEN`), also the dashboard's login: how long it must be,
//! how a presented one is compared, and the [throttle](super::guesses) every check goes through.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use weld_pipeline::Error;

use super::guesses::{Client, Guesses, Verdict, Via};

/// The shortest token taken, in bytes. With the throttle a client gets about one guess a
/// minute, but an attacker with many addresses gets one each: 16 random bytes of hex (64 bits)
/// or base64 (96 bits) keep any number of them from finding it in a lifetime, and a word such
/// as `ci-token` is refused before it is ever exposed.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The API's bearer token. Never printed; compared by SHA-256 digest, in time that tells nothing
/// about the token (neither where a guess differs nor how long the token is).
///
/// Every check goes through a throttle of wrong tokens per client (see the
/// [limits table](crate::api#limits)). Clones share it: give the API and the dashboard clones of
/// one token, as the data-streams service does, so that a guesser cannot switch between the two.
#[derive(Clone)]
pub struct ApiToken {
    digest: [u8; 32],
    guesses: Arc<Guesses>,
}

impl ApiToken {
    /// Wraps the token.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when it is shorter than [`MIN_TOKEN_BYTES`]: a service refuses to
    /// start with it, saying how to make a good one.
    pub fn new(token: impl AsRef<str>) -> Result<Self, Error> {
        let token = token.as_ref();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(Error::Invalid(format!(
                "the API token (WELD_API_TOKEN) has {} bytes, and must have at least \
                 {MIN_TOKEN_BYTES}: make one with `openssl rand -hex 32`",
                token.len()
            )));
        }
        Ok(ApiToken {
            digest: Sha256::digest(token.as_bytes()).into(),
            guesses: Arc::new(Guesses::default()),
        })
    }

    /// Whether `presented`, from `client` through `via`, may pass: a wrong token counts against
    /// the client, a right one clears its count, and a client past its free failures is refused
    /// without a look at what it presented until its delay has passed.
    pub(crate) fn check(&self, client: Client, via: Via, presented: &[u8]) -> Verdict {
        // Compared before the throttle's lock is taken, so the lock is held for a lookup only.
        let right = self.matches(presented);
        self.guesses
            .judge(client, via, right, tokio::time::Instant::now())
    }

    /// Whether `presented` is the token.
    fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        self.digest
            .iter()
            .zip(presented)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }

    /// The token's SHA-256 digest: a key for what is derived from the token (the dashboard's
    /// sessions), never the token itself.
    pub(crate) fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_shorter_than_16_bytes_is_refused_with_how_to_make_one() {
        let error = ApiToken::new("ci-token").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("has 8 bytes"), "{message}");
        assert!(message.contains("at least 16"), "{message}");
        assert!(message.contains("openssl rand"), "{message}");
        assert!(ApiToken::new("0123456789abcdef").is_ok());
    }

    #[test]
    fn only_the_token_matches() {
        let token = ApiToken::new("0123456789abcdef").unwrap();
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b""));
    }
}
