//! A throwaway `redis-server` on a free loopback port (the Debian `redis-server` package, which
//! `make test` installs), with no persistence, killed when the guard drops.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pairdb_middleware::idempotency::RedisIdempotencyStore;

/// A running server; dropping it stops it.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:<port>/`.
    pub url: String,
}

impl RedisServer {
    /// Starts a server and waits until it answers.
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run `make test` (it installs redis-server)");
        let mut server = RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
        };
        let started = Instant::now();
        while RedisIdempotencyStore::connect(&server.url).await.is_err() {
            // A lost race for the port exits ours.
            if let Ok(Some(exit)) = server.child.try_wait() {
                panic!("redis-server exited ({exit})");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "redis-server did not answer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
