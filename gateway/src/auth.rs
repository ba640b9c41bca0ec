//! The handshake: a device's JWT verified against the configured key, its issuer, audience
//! and expiry checked, and the user read from the token alone (docs/realtime.md). A refusal
//! names what was wrong, never the key.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::{KeySource, Settings};

/// A JWKS from a URL is fetched again for an unknown `kid` at most this often.
const REFETCH_EVERY: Duration = Duration::from_secs(60);

/// Who connected: the user comes from the token, the device from the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub device: String,
    /// The token's `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// Why a handshake was refused. The text is what the device's `connect_error` says; the
/// code labels the refusal in `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing token: send the JWT as auth.token in the handshake")]
    MissingToken,
    #[error("malformed token: not a JWT ({0})")]
    Malformed(String),
    #[error("bad signature: the token is not signed by a key this gateway trusts")]
    BadSignature,
    #[error("unknown key: the token's kid {0:?} is not in the JWKS")]
    UnknownKey(String),
    #[error("wrong algorithm: {0:?} is not accepted here (expected {1})")]
    WrongAlgorithm(String, &'static str),
    #[error("expired: the token's exp has passed; get a fresh token and connect again")]
    Expired,
    #[error("not yet valid: the token's nbf is in the future")]
    NotYetValid,
    #[error("wrong audience: the token's aud is not this gateway's")]
    WrongAudience,
    #[error("wrong issuer: the token's iss is not this gateway's")]
    WrongIssuer,
    #[error("missing claim: the token has no {0:?} claim")]
    MissingClaim(String),
    #[error("missing deviceId: send a device id (1 to 128 of letters, digits and -_.:) as auth.deviceId")]
    MissingDevice,
    #[error("bad deviceId: expected 1 to 128 of letters, digits and -_.:")]
    BadDevice,
    #[error("keys unavailable: the gateway could not load its JWKS; try again later")]
    KeysUnavailable,
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::Malformed(_) => "malformed_token",
            Refusal::BadSignature => "bad_signature",
            Refusal::UnknownKey(_) => "unknown_key",
            Refusal::WrongAlgorithm(..) => "wrong_algorithm",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::MissingClaim(_) => "missing_claim",
            Refusal::MissingDevice => "missing_device",
            Refusal::BadDevice => "bad_device",
            Refusal::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// A device id as the keys `device:{id}:…` can hold it.
pub fn valid_device(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

enum Keys {
    Hs256(DecodingKey),
    Jwks {
        by_kid: HashMap<String, (DecodingKey, Option<Algorithm>)>,
        fetched: Option<Instant>,
    },
}

/// Verifies device tokens.
pub struct Verifier {
    source: KeySource,
    keys: tokio::sync::RwLock<Keys>,
    validation: Validation,
    user_claim: String,
    http: reqwest::Client,
}

fn jwks_keys(set: &JwkSet) -> HashMap<String, (DecodingKey, Option<Algorithm>)> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            Some((kid, (key, alg)))
        })
        .collect()
}

impl Verifier {
    /// Loads the keys (a JWKS file or URL is read now: a gateway that cannot verify
    /// anything does not start).
    pub async fn new(settings: &Settings) -> Result<Verifier, String> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for the JWKS: {e}"))?;
        let keys = match &settings.keys {
            KeySource::Hs256(secret) => Keys::Hs256(
                DecodingKey::from_secret(secret)
                    .map_err(|e| format!("GATEWAY_JWT_HS256_SECRET is not a usable key: {e}"))?,
            ),
            KeySource::JwksFile(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("GATEWAY_JWT_JWKS: cannot read {}: {e}", path.display())
                })?;
                let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
                    format!("GATEWAY_JWT_JWKS: {} is not a JWKS: {e}", path.display())
                })?;
                Keys::Jwks {
                    by_kid: jwks_keys(&set),
                    fetched: None,
                }
            }
            KeySource::JwksUrl(url) => Keys::Jwks {
                by_kid: fetch(&http, url).await?,
                fetched: Some(Instant::now()),
            },
        };
        if let Keys::Jwks { by_kid, .. } = &keys {
            if by_kid.is_empty() {
                return Err(
                    "GATEWAY_JWT_JWKS holds no usable key (each needs a kid; RS256 or ES256)"
                        .to_string(),
                );
            }
        }
        Ok(Verifier {
            source: settings.keys.clone(),
            keys: tokio::sync::RwLock::new(keys),
            validation,
            user_claim: settings.user_claim.clone(),
            http,
        })
    }

    /// The identity of a handshake's `auth` object, or why it is refused. Only `token`,
    /// `deviceId` and `lastSeenId` are read; anything else (a `userId`, say) is ignored.
    pub async fn verify(&self, auth: &Value) -> Result<Identity, Refusal> {
        let token = match auth.get("token") {
            Some(Value::String(t)) if !t.is_empty() => t.as_str(),
            _ => return Err(Refusal::MissingToken),
        };
        let device = match auth.get("deviceId") {
            Some(Value::String(d)) if valid_device(d) => d.clone(),
            Some(Value::String(d)) if !d.is_empty() => return Err(Refusal::BadDevice),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                return Err(Refusal::MissingDevice)
            }
            Some(_) => return Err(Refusal::BadDevice),
        };
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                Refusal::WrongAlgorithm("unknown".into(), self.expected())
            }
            other => Refusal::Malformed(format!("{other:?}")),
        })?;
        let (key, alg) = self.key_for(&header).await?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![alg];
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::InvalidSignature => Refusal::BadSignature,
            ErrorKind::ExpiredSignature => Refusal::Expired,
            ErrorKind::ImmatureSignature => Refusal::NotYetValid,
            ErrorKind::InvalidAudience => Refusal::WrongAudience,
            ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) => Refusal::MissingClaim(claim.clone()),
            ErrorKind::InvalidAlgorithm => {
                Refusal::WrongAlgorithm(format!("{:?}", header.alg), self.expected())
            }
            other => Refusal::Malformed(format!("{other:?}")),
        })?;
        let user = match data.claims.get(&self.user_claim) {
            Some(Value::String(u)) if !u.is_empty() => u.clone(),
            _ => return Err(Refusal::MissingClaim(self.user_claim.clone())),
        };
        let expires_at = data.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok(Identity {
            user,
            device,
            expires_at,
        })
    }

    fn expected(&self) -> &'static str {
        match self.source {
            KeySource::Hs256(_) => "HS256",
            _ => "RS256 or ES256",
        }
    }

    async fn key_for(
        &self,
        header: &jsonwebtoken::Header,
    ) -> Result<(DecodingKey, Algorithm), Refusal> {
        let alg_name = format!("{:?}", header.alg);
        {
            let keys = self.keys.read().await;
            match &*keys {
                Keys::Hs256(key) => {
                    return if header.alg == Algorithm::HS256 {
                        Ok((key.clone(), Algorithm::HS256))
                    } else {
                        Err(Refusal::WrongAlgorithm(alg_name, "HS256"))
                    };
                }
                Keys::Jwks { .. } if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) => {
                    return Err(Refusal::WrongAlgorithm(alg_name, "RS256 or ES256"))
                }
                Keys::Jwks { by_kid, .. } => {
                    let kid = header.kid.clone().unwrap_or_default();
                    if let Some(found) = pick(by_kid, &kid, header.alg)? {
                        return Ok(found);
                    }
                }
            }
        }
        // A key this gateway does not hold: the issuer may have rotated its keys.
        let kid = header.kid.clone().unwrap_or_default();
        let KeySource::JwksUrl(url) = &self.source else {
            return Err(Refusal::UnknownKey(kid));
        };
        let mut keys = self.keys.write().await;
        if let Keys::Jwks { by_kid, fetched } = &mut *keys {
            if fetched.is_none_or(|at| at.elapsed() >= REFETCH_EVERY) {
                *fetched = Some(Instant::now());
                match fetch(&self.http, url).await {
                    Ok(fresh) => *by_kid = fresh,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not fetch the JWKS again");
                        return Err(Refusal::KeysUnavailable);
                    }
                }
            }
            if let Some(found) = pick(by_kid, &kid, header.alg)? {
                return Ok(found);
            }
        }
        Err(Refusal::UnknownKey(kid))
    }
}

type KeyMap = HashMap<String, (DecodingKey, Option<Algorithm>)>;

/// The key named `kid`, if held, for a token signed with `alg` (a key that says which
/// algorithm it is for is used for that one only).
fn pick(
    by_kid: &KeyMap,
    kid: &str,
    alg: Algorithm,
) -> Result<Option<(DecodingKey, Algorithm)>, Refusal> {
    match by_kid.get(kid) {
        None => Ok(None),
        Some((_, Some(key_alg))) if *key_alg != alg => Err(Refusal::WrongAlgorithm(
            format!("{alg:?}"),
            "the algorithm of the key named by kid",
        )),
        Some((key, _)) => Ok(Some((key.clone(), alg))),
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<KeyMap, String> {
    let response = http
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("GATEWAY_JWT_JWKS: cannot fetch {url}: {e}"))?;
    let set: JwkSet = response
        .json()
        .await
        .map_err(|e| format!("GATEWAY_JWT_JWKS: {url} is not a JWKS: {e}"))?;
    Ok(jwks_keys(&set))
}

/// A development token for the demo page (HS256, one hour).
pub fn demo_token(settings: &Settings, user: &str) -> Result<String, String> {
    let KeySource::Hs256(secret) = &settings.keys else {
        return Err("the demo needs GATEWAY_JWT_HS256_SECRET".to_string());
    };
    let claims = serde_json::json!({
        "iss": settings.issuer, "aud": settings.audience,
        settings.user_claim.clone(): user, "exp": now_secs() + 3600,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(secret)
        .map_err(|e| format!("cannot use the secret to sign: {e}"))?;
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| format!("cannot sign a demo token: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_short_and_plain() {
        assert!(valid_device("phone-1"));
        assert!(valid_device("a:b.c_d"));
        assert!(!valid_device(""));
        assert!(!valid_device("x}y"));
        assert!(!valid_device(&"d".repeat(129)));
    }

    #[test]
    fn every_refusal_names_its_reason_first() {
        for (refusal, start) in [
            (Refusal::Expired, "expired"),
            (Refusal::BadSignature, "bad signature"),
            (Refusal::WrongAudience, "wrong audience"),
            (Refusal::MissingToken, "missing token"),
        ] {
            assert!(refusal.to_string().starts_with(start), "{refusal}");
        }
    }
}
