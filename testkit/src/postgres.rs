//! A throwaway PostgreSQL server: `initdb` into a temp dir and `postgres` on a free loopback port,
//! killed (and its files removed) when the guard drops. Uses the Debian `postgresql` package
//! (`make test` installs it); as root the server runs as the `postgres` user, since PostgreSQL
//! refuses to run as root. No test depends on a server already running.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running server; dropping it stops the server and deletes its files.
pub struct PgServer {
    child: Child,
    /// `postgres://pairdb@127.0.0.1:<port>/postgres`.
    pub url: String,
    _dir: TempDir,
}

/// The newest installed server's `bin` directory.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run `make test` (it installs the postgresql package)")
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/<version>/bin/postgres")
        .1
}

/// The `postgres` user's uid and gid, from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres")).then(|| {
                (
                    fields[2].parse().expect("uid"),
                    fields[3].parse().expect("gid"),
                )
            })
        })
        .expect("no postgres user (installed with the postgresql package)")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

/// `command`, run as the `postgres` user when this process is root.
fn as_server_user(mut command: Command) -> Command {
    if running_as_root() {
        let (uid, gid) = postgres_user();
        command.gid(gid).uid(uid);
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl PgServer {
    /// Starts a fresh, empty server and waits until it accepts connections.
    pub async fn start() -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        if running_as_root() {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let status = as_server_user(Command::new(bin.join("initdb")))
            .args([
                "-U",
                "pairdb",
                "--auth=trust",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            status.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = as_server_user(Command::new(bin.join("postgres")))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let url = format!("postgres://pairdb@127.0.0.1:{port}/postgres");
        let mut server = PgServer {
            child,
            url,
            _dir: dir,
        };
        server.wait_ready(Duration::from_secs(60)).await;
        server
    }

    /// Waits until this server (not another on the same port: a lost race for it exits ours)
    /// accepts connections.
    async fn wait_ready(&mut self, bound: Duration) {
        use sqlx::Connection;
        let started = Instant::now();
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("postgres exited ({exit}): {}", self.log());
            }
            let connected = tokio::time::timeout(
                Duration::from_secs(5),
                sqlx::PgConnection::connect(&self.url),
            )
            .await;
            if let Ok(Ok(mut conn)) = connected {
                let dir: Result<String, _> = sqlx::query_scalar("SHOW data_directory")
                    .fetch_one(&mut conn)
                    .await;
                let _ = conn.close().await;
                let ours = self._dir.path().join("data");
                assert!(
                    dir.as_ref().is_ok_and(|d| Path::new(d) == ours),
                    "another server answers on {}: {dir:?}",
                    self.url
                );
                return;
            }
            assert!(
                started.elapsed() < bound,
                "postgres did not accept connections: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    /// The server's data directory.
    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
