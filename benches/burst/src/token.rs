//! HS256 JSON Web Tokens for `hello`, signed the way the server checks them.
//!
//! Hand-rolled from HMAC-SHA256 and base64url rather than a JWT crate: the generator
//! only ever signs one fixed header and three or four claims, thousands of times at
//! start-up, and a JWT crate would bring its own crypto backend for nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `{"alg":"HS256","typ":"JWT"}`, the only header the server accepts.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Signs tokens for one tenant with one secret.
#[derive(Clone)]
pub struct Signer {
    /// The HMAC keyed with the secret, cloned per token instead of re-keyed.
    mac: Hmac<Sha256>,
    /// The `tenant` claim of every token.
    tenant: String,
    /// The `exp` claim: seconds since the epoch.
    exp: u64,
}

impl Signer {
    /// A signer for `tenant` whose tokens expire at `exp` (seconds since the epoch).
    pub fn new(secret: &str, tenant: &str, exp: u64) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("hmac takes a key of any length");
        Self {
            mac,
            tenant: tenant.to_owned(),
            exp,
        }
    }

    /// A token for user `sub`.
    pub fn token(&self, sub: &str) -> String {
        let claims = serde_json::json!({ "sub": sub, "tenant": self.tenant, "exp": self.exp });
        let mut out = URL_SAFE_NO_PAD.encode(HEADER);
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut mac = self.mac.clone();
        mac.update(out.as_bytes());
        let signature = mac.finalize().into_bytes();
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(signature));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_has_the_claims_and_verifies() {
        let t = Signer::new("bench-secret", "acme", 2_000_000_000).token("alice");
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[0]).unwrap(), HEADER.as_bytes());
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"sub": "alice", "tenant": "acme", "exp": 2_000_000_000u64})
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"bench-secret").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        assert!(mac
            .verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .is_ok());
    }
}
