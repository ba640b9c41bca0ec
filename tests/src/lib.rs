//! Test support: a fresh, migrated mirror per test on either store, event builders and row
//! access. PostgreSQL is a real server (`TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); each test gets a schema of its own.
//! One file per helper: `mirror` (the store fixture), `envelopes` (builders), `queues` (moto),
//! `process` (running binaries, captured logs), `servers` (private PostgreSQL and Redis),
//! `oracle` (the derived columns from the rows).

mod envelopes;
mod mirror;
mod oracle;
mod process;
mod queues;
mod servers;

pub use envelopes::*;
pub use mirror::*;
pub use oracle::*;
pub use process::*;
pub use queues::*;
pub use servers::*;

pub use realtime_mirror::batch::Counts;

pub use realtime_mirror;

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn test_database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string())
}

/// Runs each `async fn rule(m: Mirror) { … }` once on SQLite and once on PostgreSQL, as
/// `rule::sqlite` and `rule::postgres`.
#[macro_export]
macro_rules! on_both_stores {
    ($(async fn $name:ident($m:ident: Mirror) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn rule($m: $crate::Mirror) $body
                #[tokio::test]
                async fn sqlite() { rule($crate::Mirror::sqlite().await).await }
                #[tokio::test]
                async fn postgres() { rule($crate::Mirror::postgres().await).await }
            }
        )*
    };
}
