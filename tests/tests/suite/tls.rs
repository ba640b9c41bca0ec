//! TLS to a database off the loopback interface verifies by default: the server's
//! certificate must chain to a trusted authority (the shipped RDS bundle, the public web
//! roots, or the connection's own `sslrootcert`) and name the host connected to.
//!
//! The server is a private cluster with TLS on, reached by this machine's host name: a name,
//! not a loopback address, so the rule applies, though it resolves to 127.0.0.0/8.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::process::Command;

use mirror_tests::realtime_mirror::config::{Config, DatabaseUrl};
use mirror_tests::realtime_mirror::credentials::{names_root_cert, tls_off_loopback};
use mirror_tests::realtime_mirror::Store;
use mirror_tests::PrivateCluster;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// This machine's host name and the loopback address it resolves to.
fn host_name() -> (String, String) {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the host name")
        .trim()
        .to_string();
    let address = (name.as_str(), 0)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("the host name {name:?} does not resolve: {e}"))
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4() && ip.is_loopback())
        .unwrap_or_else(|| {
            panic!("this test needs the host name {name:?} to resolve to 127.0.0.0/8 (/etc/hosts)")
        });
    (name, address.to_string())
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A test certificate authority (`ca.crt`) and a server certificate it signed for `name`,
/// written as `{file}.crt` and `{file}.key`, the key readable by the server only.
fn server_certificate(dir: &Path, file: &str, name: &str) {
    if !dir.join("ca.crt").exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=mirror test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        );
    }
    std::fs::write(
        dir.join(format!("{file}.ext")),
        format!("subjectAltName=DNS:{name}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{file}.key"),
            "-out",
            &format!("{file}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{file}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{file}.ext"),
            "-out",
            &format!("{file}.crt"),
        ],
    );
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let status = Command::new("chown")
            .arg("postgres")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join(format!("{file}.key")),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// Connects as the product would for `url` (its TLS rule applied) and says whether the
/// session is encrypted, or why it could not connect.
async fn connect(url: &str) -> Result<bool, String> {
    let options = tls_off_loopback(
        url.parse::<PgConnectOptions>().unwrap(),
        names_root_cert(url),
    )
    .map_err(|e| e.to_string())?;
    let mut connection = options.connect().await.map_err(|e| e.to_string())?;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    Ok(ssl)
}

#[tokio::test]
async fn a_database_off_loopback_is_reached_with_verify_full_by_default() {
    let (name, address) = host_name();
    let cluster = PrivateCluster::start_with(&address, |dir| {
        server_certificate(dir, "server", &name);
        server_certificate(dir, "elsewhere", "elsewhere.invalid");
        vec![
            "ssl=on".into(),
            format!("ssl_cert_file={}", dir.join("server.crt").display()),
            format!("ssl_key_file={}", dir.join("server.key").display()),
        ]
    });
    cluster.psql("ALTER ROLE postgres PASSWORD 'tls-test'");
    let ca = cluster.dir().join("ca.crt");
    let url = format!(
        "postgres://postgres:tls-test@{name}:{}/postgres",
        cluster.port
    );

    // No sslmode: verify-full against the shipped RDS bundle and the public roots, which do
    // not know this test's authority. (`require` would have connected.)
    let refused = connect(&url).await.unwrap_err();
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("unknown issuer"),
        "an unknown authority is refused: {refused}"
    );
    assert_eq!(
        connect(&format!("{url}?sslmode=require")).await,
        Ok(true),
        "an explicit sslmode=require is the operator's choice: encrypted, not verified"
    );
    let trusted = format!("{url}?sslrootcert={}", ca.display());
    assert_eq!(
        connect(&trusted).await,
        Ok(true),
        "the connection's own CA is trusted"
    );

    // The same through the store the functions open from DATABASE_URL.
    let config = Config {
        database_url: DatabaseUrl::new(&trusted),
        ..Config::default()
    };
    let Store::Postgres(pool, _) = Store::connect(&config).await.unwrap() else {
        panic!("a postgres:// URL opens a PostgreSQL store")
    };
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl, "the store's sessions are encrypted");
    pool.close().await;

    // verify-full checks the name: a certificate from the trusted authority for another
    // host is refused.
    // (The server reads its certificate files again on reload.)
    for extension in ["crt", "key"] {
        std::fs::copy(
            cluster.dir().join(format!("elsewhere.{extension}")),
            cluster.dir().join(format!("server.{extension}")),
        )
        .unwrap();
    }
    cluster.psql("SELECT pg_reload_conf()");
    let misnamed = connect(&trusted).await.unwrap_err();
    assert!(
        misnamed.contains("NotValidForName") || misnamed.contains("not valid for name"),
        "a certificate for another host is refused: {misnamed}"
    );
}

#[test]
fn the_shipped_rds_bundle_holds_only_certificates() {
    let bundle =
        std::str::from_utf8(mirror_tests::realtime_mirror::credentials::RDS_CA_BUNDLE).unwrap();
    let certificates = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(
        certificates > 50,
        "the RDS bundle: {certificates} certificates"
    );
    assert_eq!(
        certificates,
        bundle.matches("-----END CERTIFICATE-----").count()
    );
    assert!(bundle.contains("CN = Amazon RDS us-east-1 Root CA RSA2048 G1"));
    assert!(
        bundle.contains("CN = Amazon Root CA 1"),
        "RDS Proxy's authority"
    );
}
