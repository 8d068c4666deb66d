//! Authentication: HS256 JWTs (verify and mint), the secret's source, and who a
//! connection or request is ([`Identity`]).

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rill_protocol::AuthUser;
use serde::{Deserialize, Serialize};

/// The claims rill reads and writes. `sub` and `exp` are required.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: u64,
    /// Set on guest tokens (`POST /api/v1/auth/guest`): an anonymous identity
    /// that owns conversations but is not an authenticated user.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rill_guest: bool,
}

/// Who is asking: an authenticated user, a guest (an anonymous identity kept by
/// a browser), or nobody in particular.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Identity {
    /// No (valid) token was presented.
    #[default]
    Anonymous,
    /// A guest token: owns its conversations, but is not authenticated.
    Guest(String),
    /// A verified user token.
    User(AuthUser),
}

/// The owner key of conversations started without any token. They are shared by
/// every caller without a token (documented): use a guest or user token for
/// private conversations.
pub const PUBLIC_OWNER: &str = "public";

impl Identity {
    /// The owner key of what this identity starts: `user:<sub>`, `guest:<id>`,
    /// or `None` without a token (such streams are reachable by whoever holds
    /// the unguessable stream id).
    pub fn owner(&self) -> Option<String> {
        match self {
            Identity::Anonymous => None,
            Identity::Guest(id) => Some(format!("guest:{id}")),
            Identity::User(user) => Some(format!("user:{}", user.id)),
        }
    }

    /// The owner key of conversations: [`Identity::owner`], or [`PUBLIC_OWNER`].
    pub fn conversation_owner(&self) -> String {
        self.owner().unwrap_or_else(|| PUBLIC_OWNER.to_owned())
    }

    /// Whether a token was verified.
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Identity::User(_))
    }
}

/// Why a token was rejected. The text is safe to show to the client.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token has expired.
    #[error("Token has expired")]
    Expired,
    /// Anything else: bad signature, wrong algorithm, malformed, missing claims.
    #[error("Invalid token")]
    Invalid,
}

/// The signing and verifying keys for one secret.
#[derive(Clone)]
pub struct JwtKeys {
    /// Signs tokens (`rill token`, tests).
    encoding: EncodingKey,
    /// Verifies tokens.
    decoding: DecodingKey,
    /// HS256 only; `exp` required; no leeway beyond the library's default.
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(…)")
    }
}

impl JwtKeys {
    /// Keys for a shared secret.
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The configured secret, or the one kept in `data_dir` (created on first use).
    pub fn load(secret: Option<&str>, data_dir: &Path) -> std::io::Result<Self> {
        match secret {
            Some(secret) => Ok(Self::from_secret(secret.as_bytes())),
            None => Ok(Self::from_secret(
                load_or_create_secret(data_dir)?.as_bytes(),
            )),
        }
    }

    /// Verifies a token and returns who it names: a user or a guest.
    pub fn identity(&self, token: &str) -> Result<Identity, TokenError> {
        let claims = self.claims(token)?;
        if claims.rill_guest {
            return Ok(Identity::Guest(claims.sub));
        }
        Ok(Identity::User(AuthUser {
            id: claims.sub,
            email: claims.email,
            name: claims.name,
        }))
    }

    /// Verifies a user token and returns the user it names (guest tokens are
    /// not users: `Invalid`).
    pub fn verify(&self, token: &str) -> Result<AuthUser, TokenError> {
        match self.identity(token)? {
            Identity::User(user) => Ok(user),
            _ => Err(TokenError::Invalid),
        }
    }

    /// A token's verified claims.
    fn claims(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token.trim(), &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// Mints a guest token for a new random identity, valid for `ttl_secs`.
    pub fn mint_guest(&self, ttl_secs: u64) -> (String, String) {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = unix_now_secs();
        let claims = Claims {
            sub: id.clone(),
            email: None,
            name: None,
            exp: now + ttl_secs,
            iat: now,
            rill_guest: true,
        };
        (id, self.sign(&claims))
    }

    /// Mints a token for `sub` valid for `ttl_secs`.
    pub fn mint(
        &self,
        sub: &str,
        email: Option<&str>,
        name: Option<&str>,
        ttl_secs: u64,
    ) -> String {
        let now = unix_now_secs();
        let claims = Claims {
            sub: sub.to_owned(),
            email: email.map(str::to_owned),
            name: name.map(str::to_owned),
            exp: now + ttl_secs,
            iat: now,
            rill_guest: false,
        };
        self.sign(&claims)
    }

    /// Signs claims (HS256 signing of a serializable struct cannot fail).
    fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .unwrap_or_default()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const SECRET_FILE: &str = "jwt-secret";

/// Reads `<data_dir>/jwt-secret`, creating it (mode 0600, 256 random bits) if absent.
fn load_or_create_secret(data_dir: &Path) -> std::io::Result<String> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())?;
            Ok(secret)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path)?.trim().to_owned())
        }
        Err(e) => Err(e),
    }
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_verifies_with_same_secret_only() {
        let keys = JwtKeys::from_secret(b"one");
        let token = keys.mint("u1", Some("u@x"), Some("U"), 60);
        let user = keys.verify(&token).unwrap();
        assert_eq!(user.id, "u1");
        assert_eq!(user.email.as_deref(), Some("u@x"));
        assert!(matches!(
            JwtKeys::from_secret(b"two").verify(&token),
            Err(TokenError::Invalid)
        ));
    }

    #[test]
    fn expired_and_garbage_tokens_are_rejected() {
        let keys = JwtKeys::from_secret(b"k");
        let expired = {
            let claims = Claims {
                sub: "u".into(),
                email: None,
                name: None,
                exp: 1,
                iat: 0,
                rill_guest: false,
            };
            jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k"))
                .unwrap()
        };
        assert!(matches!(keys.verify(&expired), Err(TokenError::Expired)));
        assert!(matches!(keys.verify("not.a.jwt"), Err(TokenError::Invalid)));
        assert!(matches!(keys.verify(""), Err(TokenError::Invalid)));
    }

    #[test]
    fn guest_tokens_are_guests_not_users() {
        let keys = JwtKeys::from_secret(b"k");
        let (id, token) = keys.mint_guest(60);
        let identity = keys.identity(&token).unwrap();
        assert_eq!(identity, Identity::Guest(id.clone()));
        assert_eq!(identity.owner(), Some(format!("guest:{id}")));
        assert!(!identity.is_authenticated());
        assert!(matches!(keys.verify(&token), Err(TokenError::Invalid)));
        // A user whose sub looks like a guest's still has a distinct owner key.
        let user = keys.identity(&keys.mint(&id, None, None, 60)).unwrap();
        assert_ne!(user.owner(), identity.owner());
        assert_eq!(Identity::Anonymous.conversation_owner(), PUBLIC_OWNER);
    }

    #[test]
    fn secret_file_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("rill-auth-{}", uuid::Uuid::new_v4()));
        let a = load_or_create_secret(&dir).unwrap();
        let b = load_or_create_secret(&dir).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
