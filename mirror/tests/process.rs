//! The `registry-mirror` binary as an operator runs it: several workers on the shared port
//! answering connections open at once, and a clean exit on SIGTERM. Nothing goes upstream:
//! the requests are for `/metrics`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The running binary, killed if a test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary, started with `workers` workers on a port of the OS's choosing, its state in
/// `data` (the default blob store included); its address comes from its "ready" log line.
fn start(workers: usize, data: &std::path::Path) -> (Running, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_registry-mirror"))
        .args(["--listen", "127.0.0.1:0", "--workers", &workers.to_string()])
        .arg("--data-dir")
        .arg(data)
        // Never asked: only /metrics is requested.
        .args(["--upstream", "none=http://127.0.0.1:9"])
        .args(["--log", "info", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the registry-mirror binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let child = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if json["fields"]["message"] == "registry mirror ready" {
                let listen = json["fields"]["listen"].as_str().unwrap_or_default();
                let _ = tx.send(listen.parse::<SocketAddr>());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a ready line within 30 s")
        .expect("the listen address in it");
    (child, addr)
}

/// One `GET /metrics` on `conn` (kept alive): its status line.
fn get_metrics(conn: &mut TcpStream) -> String {
    conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: mirror\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).expect("an answer within 10 s"), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    // The body is read whole, so that the connection can be asked again.
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).unwrap();
    head.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn every_workers_connections_are_answered_and_sigterm_ends_the_process() {
    let data = tempfile::tempdir().unwrap();
    let (mut running, addr) = start(3, data.path());
    let child = &mut running.0;
    // 24 connections, open at once. The kernel spreads them over the three workers'
    // listeners (`SO_REUSEPORT` hashes each connection), so a worker that did not serve
    // would leave the ones it got unanswered; that it gets none has odds of (2/3)^24,
    // about 1 in 16,000.
    let mut conns: Vec<_> = (0..24)
        .map(|_| {
            let conn = TcpStream::connect(addr).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            conn
        })
        .collect();
    for round in 0..2 {
        for (i, conn) in conns.iter_mut().enumerate() {
            assert_eq!(
                get_metrics(conn),
                "HTTP/1.1 200 OK",
                "connection {i}, round {round}"
            );
        }
    }

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // The idle keep-alive connections were closed, not left hanging.
    for conn in &mut conns {
        let mut rest = Vec::new();
        assert!(conn.read_to_end(&mut rest).is_ok());
    }
}
