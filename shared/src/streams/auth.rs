//! The Redis auth token: read from its Secrets Manager secret in the form the settings say
//! (docs/streams.md), and put in the client's URL. Read again when Redis refuses it (a
//! rotated token), as the database's password is.

use crate::config::SecretForm;

use super::StreamSettings;

/// A client for the Redis of `settings`, with the auth token of its secret, if any (read
/// now). Connects only when first used.
pub async fn open_client(settings: &StreamSettings) -> Result<redis::Client, String> {
    let url = match &settings.auth_secret_arn {
        None => settings.expose_url().to_string(),
        Some(arn) => with_password(
            settings.expose_url(),
            &auth_token(arn, settings.auth_secret_form).await?,
        ),
    };
    redis::Client::open(url.as_str())
        .map_err(|e| format!("MIRROR_REDIS_URL {}: {e}", settings.shown()))
}

/// The auth token in a Secrets Manager secret, in `form`.
async fn auth_token(arn: &str, form: SecretForm) -> Result<String, String> {
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_secretsmanager::Client::new(&aws);
    let response = (client.get_secret_value().secret_id(arn).send().await).map_err(|e| {
        format!(
            "cannot read the Redis auth token secret {arn}: {}",
            aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
        )
    })?;
    let text = response
        .secret_string()
        .ok_or_else(|| format!("the Redis auth token secret {arn} has no SecretString"))?;
    token_of(text, form).ok_or_else(|| match form {
        SecretForm::Field(field) => format!(
            "the Redis auth token secret {arn} is not JSON with a string {field:?} (MIRROR_REDIS_AUTH_SECRET_FORM={field})"
        ),
        _ => format!("the Redis auth token secret {arn} is JSON without authToken or password"),
    })
}

fn token_of(secret: &str, form: SecretForm) -> Option<String> {
    let field = |map: &serde_json::Map<String, serde_json::Value>, k: &str| {
        map.get(k)?.as_str().map(str::to_string)
    };
    let json = serde_json::from_str::<serde_json::Value>(secret);
    match (form, json) {
        (SecretForm::Plain, _) => Some(secret.to_string()),
        (SecretForm::Field(k), Ok(serde_json::Value::Object(map))) => field(&map, k),
        (SecretForm::Field(_), _) => None,
        (SecretForm::Either, Ok(serde_json::Value::Object(map))) => {
            field(&map, "authToken").or_else(|| field(&map, "password"))
        }
        (SecretForm::Either, _) => Some(secret.to_string()),
    }
}

/// Whether Redis refused the credentials (a token rotated since it was read).
pub fn is_auth_error(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
}

/// `url` with `password` as its credentials (percent-encoded).
fn with_password(url: &str, password: &str) -> String {
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://:{encoded}@{rest}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_token_is_read_in_the_form_its_secret_has_and_percent_encoded() {
        let either = SecretForm::Either;
        assert_eq!(token_of("abc", either).as_deref(), Some("abc"));
        assert_eq!(
            token_of(r#"{"authToken":"t"}"#, either).as_deref(),
            Some("t")
        );
        assert_eq!(
            token_of(r#"{"password":"p"}"#, either).as_deref(),
            Some("p")
        );
        assert_eq!(token_of(r#"{"user":"x"}"#, either), None);
        let plain = SecretForm::Plain;
        assert_eq!(
            token_of(r#"{"authToken":"t"}"#, plain).as_deref(),
            Some(r#"{"authToken":"t"}"#)
        );
        let password = SecretForm::Field("password");
        assert_eq!(
            token_of(r#"{"authToken":"t","password":"p"}"#, password).as_deref(),
            Some("p")
        );
        assert_eq!(token_of("abc", password), None);
        assert_eq!(
            with_password("rediss://old@h:6379", "a b@/"),
            "rediss://:a%20b%40%2F@h:6379"
        );
    }
}
