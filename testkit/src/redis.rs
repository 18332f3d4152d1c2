//! A throwaway `redis-server` on a free loopback port (the Debian `redis-server` package, which
//! `make test` installs), with no persistence, killed when the guard drops.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; dropping it stops it.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:<port>/`.
    pub url: String,
}

impl RedisServer {
    /// Starts a server and waits until it answers.
    pub async fn start() -> RedisServer {
        // A port taken between choosing and binding it makes the server exit: choose again.
        for _ in 0..5 {
            if let Some(server) = Self::try_start().await {
                return server;
            }
        }
        panic!("redis-server could not bind a free port in 5 tries");
    }

    async fn try_start() -> Option<RedisServer> {
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
        while !server.answers().await {
            if let Ok(Some(_)) = server.child.try_wait() {
                return None;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "redis-server did not answer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(server)
    }

    /// Whether this server (not another on the same port: a lost race for the port exits ours)
    /// answers: its `INFO server` names our child's process id.
    async fn answers(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self
            .url
            .trim_start_matches("redis://")
            .trim_end_matches('/');
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await
        else {
            return false;
        };
        if stream.write_all(b"INFO server\r\n").await.is_err() {
            return false;
        }
        let wanted = format!("process_id:{}\r\n", self.child.id());
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(2);
        while reply.len() < (64 << 10) && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => reply.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                _ => return false,
            }
            let text = String::from_utf8_lossy(&reply);
            if text.contains(&wanted) {
                return true;
            }
            if text.contains("process_id:") {
                // Another server answers on our port.
                return false;
            }
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
