//! The dashboard's login: a session cookie derived from the API token, and the CSRF token of
//! each session's forms.
//!
//! The cookie is `v1.<nonce>.<issued>.<mac>`: a random nonce, when it was issued (ms since the
//! epoch) and a SHA-256 over the token's digest, the nonce and the time. Only a holder of the token
//! can make one; none says anything about the token; it lasts [`SESSION_LIFETIME_MS`]. The CSRF
//! token of a session's forms is another digest of the token's and the nonce: a page of another
//! site can neither read it nor compute it. Changing `WELD_API_TOKEN` ends every session; a
//! logout ends one, recorded by its nonce in the [logouts](super::logouts).

use sha2::{Digest, Sha256};
use weld_pipeline::Timestamp;

use crate::api::ApiToken;

/// The cookie's name.
pub(super) const COOKIE: &str = "weld_session";
/// How long a login lasts: 12 hours.
pub(super) const SESSION_LIFETIME_MS: i64 = 12 * 3_600 * 1_000;

/// A session the cookie proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Session {
    nonce: String,
    /// When the cookie stops being good by itself.
    expires: Timestamp,
}

impl Session {
    /// A new session's cookie value.
    pub(super) fn issue(token: &ApiToken, now: Timestamp) -> String {
        let nonce = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let issued = now.as_millis().to_string();
        let mac = mac(token, &nonce, &issued);
        format!("v1.{nonce}.{issued}.{mac}")
    }

    /// The session a cookie value proves, unless it is forged, malformed or expired.
    pub(super) fn verify(token: &ApiToken, cookie: &str, now: Timestamp) -> Option<Session> {
        let mut parts = cookie.split('.');
        let (Some("v1"), Some(nonce), Some(issued), Some(presented), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if !same(&mac(token, nonce, issued), presented) {
            return None;
        }
        let issued = issued.parse::<i64>().ok()?;
        let age = now.as_millis().checked_sub(issued)?;
        (0..SESSION_LIFETIME_MS).contains(&age).then(|| Session {
            nonce: nonce.to_owned(),
            expires: Timestamp::from_millis(issued.saturating_add(SESSION_LIFETIME_MS)),
        })
    }

    /// The session's random nonce: what a logout records.
    pub(super) fn nonce(&self) -> &str {
        &self.nonce
    }

    /// When the cookie would stop being good by itself: until then a logout is remembered.
    pub(super) fn expires(&self) -> Timestamp {
        self.expires
    }

    /// The CSRF token of this session's forms.
    pub(super) fn csrf(&self, token: &ApiToken) -> String {
        digest_hex(token, &[b"csrf", self.nonce.as_bytes()])
    }
}

fn mac(token: &ApiToken, nonce: &str, issued: &str) -> String {
    digest_hex(
        token,
        &[b"session", nonce.as_bytes(), b".", issued.as_bytes()],
    )
}

/// SHA-256 of the token's digest and `parts`, in hex. Every input but the last has a fixed
/// length or a separator after it, so no two inputs hash the same bytes.
fn digest_hex(token: &ApiToken, parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    hash.update(token.digest());
    for part in parts {
        hash.update(part);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub(super) fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> ApiToken {
        ApiToken::new("a-secret-of-16-bytes").unwrap()
    }

    #[test]
    fn a_session_verifies_until_it_expires_and_only_with_its_token() {
        let token = token();
        let now = Timestamp::from_millis(1_700_000_000_000);
        let cookie = Session::issue(&token, now);
        let session = Session::verify(&token, &cookie, now).expect("verifies");
        let later = Timestamp::from_millis(now.as_millis() + SESSION_LIFETIME_MS - 1);
        assert_eq!(
            Session::verify(&token, &cookie, later),
            Some(session.clone())
        );
        let expired = Timestamp::from_millis(now.as_millis() + SESSION_LIFETIME_MS);
        assert_eq!(Session::verify(&token, &cookie, expired), None);
        assert_eq!(
            Session::verify(&ApiToken::new("another-token-of-16").unwrap(), &cookie, now),
            None
        );
        // Another session has another CSRF token.
        let other = Session::verify(&token, &Session::issue(&token, now), now).expect("verifies");
        assert_ne!(session.csrf(&token), other.csrf(&token));
    }

    #[test]
    fn forged_and_malformed_cookies_are_refused() {
        let token = token();
        let now = Timestamp::from_millis(1_700_000_000_000);
        let cookie = Session::issue(&token, now);
        let (head, _) = cookie.rsplit_once('.').expect("four parts");
        // A later issue time under the same mac.
        let mut parts: Vec<&str> = cookie.split('.').collect();
        let later = (now.as_millis() + 1).to_string();
        parts[2] = &later;
        for forged in [
            format!("{head}.{}", "0".repeat(64)),
            parts.join("."),
            format!("{cookie}.x"),
            String::new(),
            "v1...".into(),
            "v2.a.1.b".into(),
            format!("v1.a.{}.b", i64::MIN),
        ] {
            assert_eq!(Session::verify(&token, &forged, now), None, "{forged}");
        }
    }

    #[test]
    fn a_cookie_is_found_among_others() {
        let header = "a=1; weld_session=v1.x.2.y;b=3";
        assert_eq!(cookie(header, COOKIE), Some("v1.x.2.y"));
        assert_eq!(cookie(header, "c"), None);
        assert_eq!(cookie("weld_session_x=1", COOKIE), None);
    }
}
