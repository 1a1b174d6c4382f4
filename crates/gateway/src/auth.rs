//! Handshake authentication: verifies the JWT a client presents (HS256 with the shared secret,
//! RS256/ES256 with the public key), and mints tokens in development mode.
//!
//! The key is chosen by the token's `alg` *family* before any signature check, so an RSA or EC
//! public key can never be used as an HMAC secret (algorithm confusion), and `none` is refused.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::config::Config;
use crate::http::json_error;

/// Clock leeway for `exp` and `nbf` at the handshake (the protocol allows at most 60 s).
pub const CLOCK_LEEWAY_S: u64 = 5;
/// Lifetime of a development token.
pub const DEV_TOKEN_TTL_S: u64 = 3_600;

/// The claims Switchyard reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(default)]
    pub publish: bool,
}

/// Who a connection is, from its verified token. Shared by the connection's tasks.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: Arc<str>,
    pub name: Option<String>,
    pub avatar: Option<String>,
    /// Glob patterns of rooms the user may join or subscribe to; `None`: any room.
    pub rooms: Option<Vec<String>>,
    pub can_publish: bool,
    /// `exp`, in seconds since the Unix epoch: the session is closed with 4001 then.
    pub expires_at: u64,
}

impl Identity {
    /// Whether the token's `rooms` claim lets this user into `room_id`.
    pub fn may_enter(&self, room_id: &str) -> bool {
        match &self.rooms {
            None => true,
            Some(patterns) => patterns
                .iter()
                .any(|p| switchyard_protocol::glob_match(p, room_id)),
        }
    }
}

/// Why a handshake was refused (HTTP 401). The message never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    /// A short label for metrics (`switchyard_auth_failures_total{reason}`).
    pub reason: &'static str,
    /// What the 401 body says.
    pub message: String,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        json_error(StatusCode::UNAUTHORIZED, "unauthorized", &self.message)
    }
}

/// Verifies tokens with the configured keys.
pub struct Authenticator {
    hmac: Option<(DecodingKey, EncodingKey)>,
    public: Option<(DecodingKey, &'static [Algorithm])>,
    issuer: Option<String>,
    audience: Option<String>,
}

const RSA_ALGS: &[Algorithm] = &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
const EC_ALGS: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];

impl Authenticator {
    /// Builds the verifier. In development mode without a secret, a random one is generated.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let secret = match (&config.jwt_secret, config.dev) {
            (Some(s), _) => Some(s.clone()),
            (None, true) => Some(format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )),
            (None, false) => None,
        };
        let hmac = secret.map(|s| {
            (
                DecodingKey::from_secret(s.as_bytes()),
                EncodingKey::from_secret(s.as_bytes()),
            )
        });
        let public = match &config.jwt_public_key {
            None => None,
            Some(pem) => Some(if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                (key, RSA_ALGS)
            } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                (key, EC_ALGS)
            } else {
                return Err(
                    "SWITCHYARD_JWT_PUBLIC_KEY_FILE holds no RSA or EC public key in PEM form"
                        .into(),
                );
            }),
        };
        Ok(Authenticator {
            hmac,
            public,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        })
    }

    /// Verifies a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let fail = |reason: &'static str, m: &str| AuthError {
            reason,
            message: m.to_owned(),
        };
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| fail("malformed", "malformed token"))?;
        let (key, alg) = match header.alg {
            Algorithm::HS256 => match &self.hmac {
                Some((key, _)) => (key, Algorithm::HS256),
                None => {
                    return Err(fail(
                        "algorithm",
                        "HS256 tokens are not accepted by this node",
                    ))
                }
            },
            alg => match &self.public {
                Some((key, algs)) if algs.contains(&alg) => (key, alg),
                _ => {
                    return Err(fail(
                        "algorithm",
                        &format!("{alg:?} tokens are not accepted by this node"),
                    ))
                }
            },
        };
        let mut validation = Validation::new(alg);
        validation.leeway = CLOCK_LEEWAY_S;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            let (reason, message) = match e.kind() {
                ErrorKind::ExpiredSignature => ("expired", "token expired"),
                ErrorKind::ImmatureSignature => ("not_yet_valid", "token not yet valid (nbf)"),
                ErrorKind::InvalidSignature => ("bad_signature", "invalid signature"),
                ErrorKind::InvalidIssuer => ("wrong_issuer", "wrong issuer"),
                ErrorKind::InvalidAudience => ("wrong_audience", "wrong audience"),
                ErrorKind::InvalidAlgorithm => ("algorithm", "algorithm not allowed"),
                ErrorKind::MissingRequiredClaim(c) if c == "exp" => {
                    ("missing_claim", "missing exp claim")
                }
                ErrorKind::MissingRequiredClaim(c) if c == "sub" => {
                    ("missing_claim", "missing sub claim")
                }
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => {
                    ("missing_claim", "missing iss claim")
                }
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => {
                    ("missing_claim", "missing aud claim")
                }
                ErrorKind::Json(_) => ("invalid_claims", "invalid claims"),
                _ => ("invalid", "invalid token"),
            };
            fail(reason, message)
        })?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > 128 {
            return Err(fail("invalid_claims", "sub must be 1 to 128 characters"));
        }
        Ok(Identity {
            user_id: Arc::from(claims.sub),
            name: claims.name.map(|n| n.chars().take(128).collect()),
            avatar: claims.avatar.map(|a| a.chars().take(1024).collect()),
            rooms: claims.rooms,
            can_publish: claims.publish,
            expires_at: claims.exp,
        })
    }

    /// Mints an HS256 token (development mode's `/dev/token`).
    pub fn mint(&self, claims: &Claims) -> Option<String> {
        let (_, key) = self.hmac.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key).ok()
    }
}
