//! What token services answer: the token and how long it lives, read within the limits the
//! mirror reads every token answer with, for its own logins and for the clients' alike.

use base64::Engine;
use std::borrow::Cow;
use std::time::{Duration, SystemTime};

/// The largest token response the mirror reads.
pub const TOKEN_BODY_LIMIT: usize = 64 * 1024;

/// How long a token lives when its service does not say (the token spec's default).
pub const TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// The longest lifetime a token service's `expires_in` (or a JWT's `exp`) is believed for.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A token service's answer: `token` (or OAuth2's `access_token`) and `expires_in`.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenAnswer<'a> {
    /// The token: borrowed from the body where it stands there as it is (no JSON escapes).
    pub token: Cow<'a, str>,
    /// How long it lives: `expires_in`, else [`TOKEN_DEFAULT_LIFETIME`]; at most
    /// [`MAX_TOKEN_LIFETIME`].
    pub lifetime: Duration,
}

impl TokenAnswer<'_> {
    /// The token in a token service's answer, and how long it lives; `None` without one.
    pub fn parse(body: &[u8]) -> Option<TokenAnswer<'_>> {
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        let lifetime = json
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .map_or(TOKEN_DEFAULT_LIFETIME, Duration::from_secs)
            .min(MAX_TOKEN_LIFETIME);
        let token = json
            .get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())?;
        // Borrowed from the body where its bytes stand there, rather than cloned.
        let text = std::str::from_utf8(body).ok()?;
        let token = match text.find(token) {
            Some(at) => Cow::Borrowed(&text[at..at + token.len()]),
            None => Cow::Owned(token.to_owned()),
        };
        Some(TokenAnswer { token, lifetime })
    }
}

/// The `exp` of a JWT, if `token` is one; at most [`MAX_TOKEN_LIFETIME`] from now.
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = json.get("exp")?.as_u64()?;
    let exp = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))?;
    Some(exp.min(SystemTime::now() + MAX_TOKEN_LIFETIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_with_their_lifetime_and_jwts_with_their_expiry() {
        let answer = |body: &'static [u8]| {
            TokenAnswer::parse(body).map(|a| (a.token.into_owned(), a.lifetime))
        };
        assert_eq!(
            answer(br#"{"token":"abc","expires_in":120}"#),
            Some(("abc".into(), Duration::from_secs(120)))
        );
        assert_eq!(
            answer(br#"{"access_token":"xyz"}"#),
            Some(("xyz".into(), TOKEN_DEFAULT_LIFETIME))
        );
        assert_eq!(
            answer(br#"{"token":"t","expires_in":18446744073709551615}"#),
            Some(("t".into(), MAX_TOKEN_LIFETIME))
        );
        assert_eq!(answer(br#"{"token":""}"#), None);
        // A token the JSON escapes is read as it means, not as it is spelled.
        assert_eq!(
            answer(br#"{"token":"a\/b"}"#),
            Some(("a/b".into(), TOKEN_DEFAULT_LIFETIME))
        );
        let jwt = |exp: u64| {
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!(r#"{{"exp":{exp}}}"#));
            format!("eyJhbGciOiJub25lIn0.{payload}.sig")
        };
        let soon = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        assert_eq!(
            jwt_expiry(&jwt(soon)),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(soon))
        );
        // Believed for a day at most.
        assert!(jwt_expiry(&jwt(u64::MAX / 4)).unwrap() <= SystemTime::now() + MAX_TOKEN_LIFETIME);
        assert_eq!(jwt_expiry("not-a-jwt"), None);
    }
}
