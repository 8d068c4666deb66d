//! Authentication: JWTs (HS256 with rill's secret; RS256/ES256/EdDSA with an
//! identity provider's public keys or JWKS), minting rill's own tokens, and who a
//! connection or request is ([`Identity`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rill_protocol::AuthUser;
use serde::{Deserialize, Serialize};

/// The claims rill reads and writes. `sub` and `exp` are required; `nbf` is
/// honoured; `aud` and `iss` are checked when configured.
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
    /// The audience (rill writes the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// The issuer (rill writes the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Set on guest tokens (`POST /api/v1/auth/guest`): an anonymous identity
    /// that owns conversations but is not an authenticated user. Honoured only
    /// on tokens signed with rill's own secret.
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

    /// Whether a user token was verified.
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Identity::User(_))
    }
}

/// A verified token: who it names, and when it stops being valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// Who.
    pub identity: Identity,
    /// The token's `exp` (seconds since the Unix epoch); `None` without a token.
    pub expires_at: Option<u64>,
}

impl From<Identity> for Verified {
    fn from(identity: Identity) -> Self {
        Verified {
            identity,
            expires_at: None,
        }
    }
}

/// Why a token was rejected. The text is safe to show to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token has expired.
    #[error("Token has expired")]
    Expired,
    /// The token's `nbf` is still in the future.
    #[error("Token is not valid yet")]
    NotYetValid,
    /// Anything else: bad signature, an algorithm or key this server does not
    /// accept (`alg: none` included), malformed, missing claims, wrong `aud`/`iss`.
    #[error("Invalid token")]
    Invalid,
}

/// What every token must satisfy besides its signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRules {
    /// Required `aud`, if set (`--jwt-audience`).
    pub audience: Option<String>,
    /// Required `iss`, if set (`--jwt-issuer`).
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// Where the keys come from (`--jwt-secret`, `--jwt-public-key`, `--jwks-file`).
#[derive(Debug, Clone, Default)]
pub struct KeySources<'a> {
    /// The HS256 secret; when `None`, the one kept in the data directory.
    pub secret: Option<&'a str>,
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519).
    pub public_key: Option<&'a Path>,
    /// A JWKS file (`{"keys": [...]}`), as identity providers publish.
    pub jwks_file: Option<&'a Path>,
    /// Claims rules.
    pub rules: TokenRules,
}

/// Why the keys could not be loaded (at startup).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The secret file could not be read or created.
    #[error("cannot read or create the JWT secret in {dir}: {source}")]
    Secret {
        /// The data directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key file could not be read or used.
    #[error("{path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why, for the operator.
        reason: String,
    },
}

/// A public key that verifies identity providers' tokens.
#[derive(Clone)]
struct PublicKey {
    /// The JWKS `kid`, if any: a token naming another kid skips this key.
    kid: Option<String>,
    /// The key.
    key: DecodingKey,
    /// The algorithms it may verify (never an HMAC one).
    algorithms: Vec<Algorithm>,
}

/// The signing and verifying keys.
#[derive(Clone)]
pub struct JwtKeys {
    /// Signs rill's own tokens (`rill token`, guests, tests).
    encoding: EncodingKey,
    /// Verifies HS256 tokens.
    secret: DecodingKey,
    /// Verify RS/PS/ES/EdDSA tokens.
    public: Vec<PublicKey>,
    /// `aud`, `iss`, leeway.
    rules: TokenRules,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKeys(secret, {} public)", self.public.len())
    }
}

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

impl JwtKeys {
    /// Keys for a shared secret only, with default rules (tests, `rill token`).
    pub fn from_secret(secret: &[u8]) -> Self {
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            secret: DecodingKey::from_secret(secret),
            public: Vec::new(),
            rules: TokenRules::default(),
        }
    }

    /// The configured keys: the secret (or the one kept in `data_dir`, created
    /// on first use) and any public keys.
    pub fn load(sources: &KeySources<'_>, data_dir: &Path) -> Result<Self, KeyError> {
        let secret = match sources.secret {
            Some(secret) => secret.to_owned(),
            None => load_or_create_secret(data_dir).map_err(|source| KeyError::Secret {
                dir: data_dir.display().to_string(),
                source,
            })?,
        };
        let mut keys = Self::from_secret(secret.as_bytes());
        keys.rules = sources.rules.clone();
        if let Some(path) = sources.public_key {
            keys.public.push(read_pem_key(path)?);
        }
        if let Some(path) = sources.jwks_file {
            keys.public.extend(read_jwks(path)?);
        }
        Ok(keys)
    }

    /// How many public keys verify identity providers' tokens.
    pub fn public_keys(&self) -> usize {
        self.public.len()
    }

    /// Verifies a token and returns who it names: a user or a guest.
    pub fn identity(&self, token: &str) -> Result<Identity, TokenError> {
        self.verify_token(token).map(|verified| verified.identity)
    }

    /// Verifies a token: who it names, and until when.
    pub fn verify_token(&self, token: &str) -> Result<Verified, TokenError> {
        let token = token.trim();
        // `alg: none` and unknown algorithms fail here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let claims = match header.alg {
            Algorithm::HS256 => self.decode(token, &self.secret, Algorithm::HS256)?,
            alg => {
                let mut outcome = Err(TokenError::Invalid);
                let candidates = self.public.iter().filter(|key| {
                    key.algorithms.contains(&alg)
                        && (key.kid.is_none() || header.kid.is_none() || key.kid == header.kid)
                });
                for key in candidates {
                    outcome = self.decode(token, &key.key, alg);
                    if outcome.is_ok() {
                        break;
                    }
                }
                let mut claims = outcome?;
                // Only rill's own secret makes guests.
                claims.rill_guest = false;
                claims
            }
        };
        if claims.sub.is_empty() {
            return Err(TokenError::Invalid);
        }
        let expires_at = Some(claims.exp);
        let identity = if claims.rill_guest {
            Identity::Guest(claims.sub)
        } else {
            Identity::User(AuthUser {
                id: claims.sub,
                email: claims.email,
                name: claims.name,
            })
        };
        Ok(Verified {
            identity,
            expires_at,
        })
    }

    /// Verifies a user token and returns the user it names (guest tokens are
    /// not users: `Invalid`).
    pub fn verify(&self, token: &str) -> Result<AuthUser, TokenError> {
        match self.identity(token)? {
            Identity::User(user) => Ok(user),
            _ => Err(TokenError::Invalid),
        }
    }

    /// A token's claims, verified with `key` for `alg` under the rules.
    fn decode(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(alg);
        // A configured `aud`/`iss` must be present, not only right when present.
        let mut required = vec!["exp", "sub"];
        required.extend(self.rules.audience.as_ref().map(|_| "aud"));
        required.extend(self.rules.issuer.as_ref().map(|_| "iss"));
        validation.set_required_spec_claims(&required);
        validation.leeway = self.rules.leeway_secs;
        validation.validate_nbf = true;
        match &self.rules.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.rules.issuer {
            validation.set_issuer(&[issuer]);
        }
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Invalid,
            })
    }

    /// Mints a guest token for a new random identity, valid for `ttl_secs`.
    pub fn mint_guest(&self, ttl_secs: u64) -> (String, String) {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut claims = self.claims(&id, None, None, ttl_secs);
        claims.rill_guest = true;
        (id, self.sign(&claims))
    }

    /// Mints a token for `sub` valid for `ttl_secs` (with the configured `aud`
    /// and `iss`, so this server accepts it).
    pub fn mint(
        &self,
        sub: &str,
        email: Option<&str>,
        name: Option<&str>,
        ttl_secs: u64,
    ) -> String {
        self.sign(&self.claims(sub, email, name, ttl_secs))
    }

    fn claims(&self, sub: &str, email: Option<&str>, name: Option<&str>, ttl_secs: u64) -> Claims {
        let now = unix_now_secs();
        Claims {
            sub: sub.to_owned(),
            email: email.map(str::to_owned),
            name: name.map(str::to_owned),
            exp: now.saturating_add(ttl_secs),
            iat: now,
            aud: self.rules.audience.clone().map(serde_json::Value::String),
            iss: self.rules.issuer.clone(),
            rill_guest: false,
        }
    }

    /// Signs claims (HS256 signing of a serializable struct cannot fail).
    fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .unwrap_or_default()
    }
}

/// A PEM public key: RSA (RS*/PS*), EC (ES256/ES384) or Ed25519 (EdDSA).
fn read_pem_key(path: &Path) -> Result<PublicKey, KeyError> {
    let fail = |reason: String| KeyError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    if String::from_utf8_lossy(&pem).contains("PRIVATE KEY") {
        return Err(fail(
            "this is a private key; give the identity provider's public key".into(),
        ));
    }
    let (key, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        (key, RSA_ALGORITHMS.to_vec())
    } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        (key, vec![Algorithm::ES256, Algorithm::ES384])
    } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        (key, vec![Algorithm::EdDSA])
    } else {
        return Err(fail(
            "not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".into(),
        ));
    };
    Ok(PublicKey {
        kid: None,
        key,
        algorithms,
    })
}

/// The signing keys of a JWKS file. Encryption keys are skipped; a symmetric
/// key, or a key rill cannot use, is an error (say which).
fn read_jwks(path: &Path) -> Result<Vec<PublicKey>, KeyError> {
    let fail = |reason: String| KeyError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let set: JwkSet =
        serde_json::from_str(&text).map_err(|e| fail(format!("not a JWKS document: {e}")))?;
    let mut keys = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let name = jwk.common.key_id.as_deref().map_or_else(
            || format!("key {index}"),
            |kid| format!("key {index} (kid {kid})"),
        );
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let by_type = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return Err(fail(format!("{name}: unsupported curve"))),
            },
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => {
                return Err(fail(format!(
                    "{name}: a symmetric key; give a shared secret with --jwt-secret"
                )));
            }
        };
        // A key that names its algorithm verifies only that one.
        let algorithms = match jwk.common.key_algorithm.as_ref() {
            Some(named) => {
                let named = named
                    .to_string()
                    .parse::<Algorithm>()
                    .ok()
                    .filter(|alg| by_type.contains(alg))
                    .ok_or_else(|| {
                        fail(format!("{name}: algorithm {named} does not fit its key"))
                    })?;
                vec![named]
            }
            None => by_type,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| fail(format!("{name}: {e}")))?;
        keys.push(PublicKey {
            kid: jwk.common.key_id.clone(),
            key,
            algorithms,
        });
    }
    if keys.is_empty() {
        return Err(fail("no signing keys in it".into()));
    }
    Ok(keys)
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
                aud: None,
                iss: None,
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
