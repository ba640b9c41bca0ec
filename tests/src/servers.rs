//! Servers of a test's own, to stop and restart without disturbing the others: a private
//! PostgreSQL cluster and a private Redis; names unique on the shared Redis.

use std::str::FromStr;

use realtime_mirror::config::Config;
use realtime_mirror::{Processor, Store};
use sqlx::postgres::PgConnectOptions;

use crate::*;

/// A PostgreSQL cluster of the test's own (`initdb` into a temporary directory, run as the
/// `postgres` user on a free loopback port), for what the shared server cannot do: check
/// passwords (it trusts every local connection), or be stopped and restarted. Stopped and
/// removed on drop.
pub struct PrivateCluster {
    pub port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
}

impl PrivateCluster {
    /// Local socket connections are trusted (for the test's own set-up, through
    /// [`PrivateCluster::psql`]); TCP connections must give a SCRAM password.
    pub fn start() -> PrivateCluster {
        PrivateCluster::start_with("127.0.0.1", |_| Vec::new())
    }

    /// As [`PrivateCluster::start`], listening on `address` (any of 127.0.0.0/8), with more
    /// server settings (`-c name=value`), which `settings` makes from the cluster's own
    /// directory (for files it writes there first, such as a certificate).
    pub fn start_with(
        address: &str,
        settings: impl FnOnce(&std::path::Path) -> Vec<String>,
    ) -> PrivateCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|p| p.join("initdb").exists())
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = std::env::temp_dir().join(unique("mirror_cluster"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let run = |args: &[&str]| {
            let status = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("runuser runs");
            assert!(status.success(), "{args:?} failed");
        };
        let chown = std::process::Command::new("chown")
            .args(["postgres", dir.to_str().unwrap()])
            .status()
            .expect("chown runs");
        assert!(chown.success(), "chown postgres {}", dir.display());
        let data = dir.join("data");
        run(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ]);
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("initdb wrote pg_hba.conf");
        rules.push_str("host all all 127.0.0.0/8 scram-sha-256\n");
        std::fs::write(&hba, rules).unwrap();
        let mut options = format!(
            "-p {port} -c listen_addresses={address} -c unix_socket_directories={}",
            dir.display()
        );
        for setting in settings(&dir) {
            options.push_str(&format!(" -c {setting}"));
        }
        run(&[
            bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-o",
            &options,
            "-l",
            dir.join("log").to_str().unwrap(),
            "-w",
            "start",
        ]);
        PrivateCluster { port, dir, bin }
    }

    /// The cluster's own directory (its data directory is `data` inside).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// `pg_ctl restart` (fast shutdown: open transactions are rolled back, connections
    /// closed), with the options it was started with; waits until it accepts connections.
    pub fn restart(&self) {
        let status = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "60", "-l"])
            .arg(self.dir.join("log"))
            .arg("restart")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl restart failed");
    }

    /// A superuser URL over TCP (setting the superuser's password on first use).
    pub fn url(&self) -> String {
        self.psql("ALTER USER postgres PASSWORD 'private-cluster'");
        format!(
            "postgres://postgres:private-cluster@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// A migrated mirror in a schema of its own on this cluster.
    pub async fn mirror(&self, config: Config) -> Mirror {
        let url = self.url();
        let schema = unique("rm_private");
        self.psql(&format!("CREATE SCHEMA {schema}"));
        let options = PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let store = Store::postgres(options, &config);
        store.migrate().await.expect("PostgreSQL migrates");
        Mirror {
            processor: Processor::new(store, config),
            url: format!("{url}?options=-c%20search_path%3D{schema}"),
        }
    }

    /// Runs SQL as the superuser over the trusted local socket.
    pub fn psql(&self, sql: &str) {
        let status = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("psql"))
            .args([
                "-h",
                self.dir.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
            ])
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                sql,
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("psql runs");
        assert!(status.success(), "psql failed: {sql}");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Redis the realtime tests use: `TEST_REDIS_URL`, or the machine's own on 6379.
pub fn test_redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A name no other test (or earlier run) uses: for users and devices on the shared Redis.
pub fn unique_name(prefix: &str) -> String {
    unique(prefix)
}

/// A Redis server of a test's own (so that stopping it disturbs nothing else), on a free
/// port, appending every write to a file in its directory so that a restart keeps the data.
pub struct PrivateRedis {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
    /// Further `redis-server` arguments (`--maxmemory 2mb`, `--requirepass …`).
    args: Vec<String>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        PrivateRedis::start_with(&[])
    }

    /// As [`PrivateRedis::start`], with further `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> PrivateRedis {
        let dir = std::env::temp_dir().join(unique("mirror_redis"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut redis = PrivateRedis {
            port,
            dir,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again), and waits until it answers.
    pub fn resume(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian package redis-server)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!(
            "the private redis-server did not start on port {}",
            self.port
        );
    }

    /// Stops the server (SIGTERM: it finishes its append-only file first) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay open, nothing is
    /// answered.
    pub fn freeze(&self, frozen: bool) {
        if let Some(child) = &self.child {
            signal(child.id(), if frozen { "STOP" } else { "CONT" });
        }
    }
}

pub(crate) fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.freeze(false);
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of a test's own: `masters` redis-server nodes in cluster mode, no
/// replicas, nothing on disk, the slots spread by `redis-cli --cluster create`, keyspace
/// notifications of streams on (as the gateway needs).
pub struct PrivateRedisCluster {
    pub ports: Vec<u16>,
    dir: std::path::PathBuf,
    children: Vec<std::process::Child>,
}

impl PrivateRedisCluster {
    pub fn start(masters: usize) -> PrivateRedisCluster {
        let dir = std::env::temp_dir().join(unique("mirror_redis_cluster"));
        std::fs::create_dir_all(&dir).unwrap();
        let listeners: Vec<_> = (0..masters)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(listeners);
        let children = ports
            .iter()
            .map(|port| {
                std::process::Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args([
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--cluster-enabled",
                        "yes",
                    ])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                    .args(["--notify-keyspace-events", "Kt"])
                    .current_dir(&dir)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("redis-server runs (Debian package redis-server)")
            })
            .collect();
        let cluster = PrivateRedisCluster {
            ports,
            dir,
            children,
        };
        for port in &cluster.ports {
            wait_for(|| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok());
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = std::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .arg("--cluster-yes")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create {nodes:?}");
        for port in &cluster.ports {
            wait_for(|| {
                let info = std::process::Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "CLUSTER", "INFO"])
                    .output()
                    .expect("redis-cli runs");
                String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")
            });
        }
        cluster
    }

    /// The first node, as an operator would configure it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) node `i`: its connections stay open, nothing
    /// is answered.
    pub fn freeze(&self, i: usize, frozen: bool) {
        signal(self.children[i].id(), if frozen { "STOP" } else { "CONT" });
    }
}

fn wait_for(mut ready: impl FnMut() -> bool) {
    for _ in 0..400 {
        if ready() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("the private Redis Cluster did not come up");
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            signal(child.id(), "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
