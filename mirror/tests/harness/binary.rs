//! The `registry-mirror` binary as operators run it, for the tests of processes: started
//! with flags on a port of the OS's choosing, its address read from its "ready" log line,
//! every line it logs kept, killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A running mirror process.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line it wrote, on stdout and stderr (its JSON log).
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// The binary with `flags` (one worker, JSON logs to nowhere but its ready line).
    pub fn start(flags: &[String]) -> Running {
        let mut command = Command::new(env!("CARGO_BIN_EXE_registry-mirror"));
        command.args(Self::ARGS).args(flags);
        Self::spawn(command)
    }

    /// The binary with `flags`, its `--data-dir` `dir` a file system of its own of `mib`
    /// MiB (a tmpfs mounted in a user and mount namespace of the process's own, as
    /// `unshare -Urm` makes them: no privilege needed, nothing mounted outside it). Its
    /// files are seen from the test with [`Running::in_namespace`].
    pub fn start_on_small_disk(dir: &std::path::Path, mib: u32, flags: &[String]) -> Running {
        let script = format!("mount -t tmpfs -o size={mib}m tmpfs \"$1\" && shift && exec \"$@\"");
        let mut command = Command::new("unshare");
        command
            .args(["-Urm", "sh", "-c", &script, "sh"])
            .arg(dir)
            .arg(env!("CARGO_BIN_EXE_registry-mirror"))
            .args(Self::ARGS)
            .arg("--data-dir")
            .arg(dir)
            .args(flags);
        Self::spawn(command)
    }

    /// Runs `sh -c script` in the process's user and mount namespaces (`nsenter`): what it
    /// sees of a [`Running::start_on_small_disk`] disk. Its exit status.
    pub fn in_namespace(&self, script: &str) -> std::process::ExitStatus {
        Command::new("nsenter")
            .args(["-U", "-m", "--preserve-credentials", "-t"])
            .arg(self.child.id().to_string())
            .args(["sh", "-c", script])
            .stderr(Stdio::null())
            .status()
            .expect("nsenter")
    }

    const ARGS: [&'static str; 6] = [
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--log-format",
        "json",
    ];

    fn spawn(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the registry-mirror binary");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let outputs: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("piped stdout")),
            Box::new(child.stderr.take().expect("piped stderr")),
        ];
        for out in outputs {
            let (lines, tx) = (lines.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                        if json["fields"]["message"] == "registry mirror ready" {
                            let listen = json["fields"]["listen"].as_str().unwrap_or_default();
                            let _ = tx.send(listen.parse::<SocketAddr>());
                        }
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut running = Running {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            lines,
        };
        running.addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a ready line within 30 s")
            .expect("the listen address in it");
        running
    }

    /// Kills the process (`SIGKILL`: no shutdown of its own).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}
