//! Child processes (`connector-host`, kclient.py) run with a deadline: a test waiting on one
//! that hangs (a record lost, a pipeline stuck) fails after the deadline, naming what it waited
//! for and showing what the child printed so far, and the child is killed.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::wait_until_blocking;

/// How long a child's pipes may stay open after it exited (a process it started may hold
/// them) before what they carried so far is taken as all.
const PIPES_AFTER_EXIT: Duration = Duration::from_secs(10);

/// `program arg...`, for messages.
fn shown<'a>(program: &OsStr, args: impl Iterator<Item = &'a OsStr>) -> String {
    let mut s = program.to_string_lossy().into_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The last `n` lines of `text`, saying how many there were.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= n {
        return format!("({} lines)\n{text}", lines.len());
    }
    format!(
        "({} lines, the last {n})\n{}",
        lines.len(),
        lines[lines.len() - n..].join("\n")
    )
}

/// The panic message of a child that did not exit in time.
fn overdue(command: &str, what: &str, limit: Duration, stdout: &[u8], stderr: &[u8]) -> String {
    format!(
        "waited {limit:?} for {what}; `{command}` had not exited, so it was killed\n\
         --- its stdout so far {}\n--- its stderr so far {}",
        tail(&String::from_utf8_lossy(stdout), 20),
        tail(&String::from_utf8_lossy(stderr), 60),
    )
}

/// Runs `cmd` with `stdin` as its input and its stdout and stderr captured; its output once
/// it exits. Panics once `limit` passed (after killing it), naming `what` the caller waited
/// for and showing the child's output so far.
pub fn output_within(cmd: &mut std::process::Command, stdin: &[u8], limit: Duration, what: &str) -> Output {
    let command = shown(cmd.get_program(), cmd.get_args());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
    // Threads feed stdin and drain stdout and stderr, so that no full pipe blocks either side.
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    let writer = thread::spawn(move || pipe.write_all(&input));
    let stdout = Captured::start(child.stdout.take().expect("stdout is piped"));
    let stderr = Captured::start(child.stderr.take().expect("stderr is piped"));

    let mut status: Option<ExitStatus> = None;
    let exited = wait_until_blocking(limit, || {
        status = child.try_wait().expect("wait for the child");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{}",
            overdue(&command, what, limit, &stdout.so_far(), &stderr.so_far())
        );
    }
    let (stdout, stderr) = (stdout.finish(), stderr.finish());
    if let Ok(Err(e)) = writer.join() {
        panic!(
            "`{command}` did not take its input ({e}), waiting for {what}; its stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        );
    }
    Output {
        status: status.expect("exited"),
        stdout,
        stderr,
    }
}

/// What a thread reads from a pipe until its end, readable meanwhile.
struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: thread::JoinHandle<()>,
}

impl Captured {
    fn start(mut from: impl Read + Send + 'static) -> Captured {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let to = bytes.clone();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                to.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Captured { bytes, reader }
    }

    fn so_far(&self) -> Vec<u8> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// All of it, once the pipe ended (or once it stayed open too long after the exit).
    fn finish(self) -> Vec<u8> {
        wait_until_blocking(PIPES_AFTER_EXIT, || self.reader.is_finished());
        self.so_far()
    }
}

/// A child process run from an async test, its stdout and stderr read as they come: the test
/// can wait for something on its stderr, or for its exit, each with a deadline.
pub struct Running {
    child: tokio::process::Child,
    command: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: watch::Receiver<Vec<u8>>,
    /// Whether the readers reached the ends of stdout and stderr.
    ends: [watch::Receiver<bool>; 2],
}

impl Running {
    /// Starts `cmd` with its stdout and stderr piped (its stdin as `cmd` says); it is killed
    /// if dropped before it exited.
    pub fn spawn(cmd: &mut tokio::process::Command) -> Running {
        let command = shown(cmd.as_std().get_program(), cmd.as_std().get_args());
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
        let mut out = child.stdout.take().expect("stdout is piped");
        let mut err = child.stderr.take().expect("stderr is piped");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (err_tx, stderr) = watch::channel(Vec::new());
        let (out_end, out_ended) = watch::channel(false);
        let (err_end, err_ended) = watch::channel(false);
        let to = stdout.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = out.read(&mut buf).await {
                to.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
            let _ = out_end.send(true);
        });
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = err.read(&mut buf).await {
                err_tx.send_modify(|s| s.extend_from_slice(&buf[..n]));
            }
            let _ = err_end.send(true);
        });
        Running {
            child,
            command,
            stdout,
            stderr,
            ends: [out_ended, err_ended],
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id().expect("the child has not been waited for")
    }

    /// Sends it SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends it SIGKILL: no chance to drain, commit or tear down ([`Running::finish`] reaps it).
    pub fn kill(&self) {
        self.signal("KILL");
    }

    fn signal(&self, name: &str) {
        let pid = self.id().to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{name} {pid}: {sent}");
    }

    /// Whether it has exited (it is reaped by [`Running::finish`]).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.borrow()).into_owned()
    }

    /// Waits until `cond` holds for its stderr so far (all of it, as text), for at most
    /// `limit`: that stderr. Panics (after killing the child) when the time is up or its
    /// stderr ended first, naming `what` was awaited and showing the stderr.
    pub async fn wait_for_stderr(
        &mut self,
        limit: Duration,
        what: &str,
        mut cond: impl FnMut(&str) -> bool,
    ) -> String {
        let stderr = &mut self.stderr;
        let found = tokio::time::timeout(limit, async {
            let seen = stderr.wait_for(|s| cond(&String::from_utf8_lossy(s))).await;
            seen.map(|s| String::from_utf8_lossy(&s).into_owned())
        })
        .await;
        match found {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => {
                let status = self.child.wait().await;
                panic!(
                    "waited for {what}; `{}` ended its stderr first ({status:?})\n--- its stderr {}",
                    self.command,
                    tail(&self.stderr(), 60)
                );
            }
            Err(_) => {
                let _ = self.child.kill().await;
                let stdout = self.stdout.lock().unwrap_or_else(|e| e.into_inner()).clone();
                panic!(
                    "{}",
                    overdue(
                        &self.command,
                        what,
                        limit,
                        &stdout,
                        self.stderr.borrow().as_slice()
                    )
                );
            }
        }
    }

    /// Waits for it to exit, for at most `limit`: its exit code (-1 if a signal ended it)
    /// and all of its stderr. Panics (after killing it) when the time is up, showing what
    /// it printed so far.
    pub async fn finish(mut self, limit: Duration) -> (i32, String) {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the child"),
            Err(_) => {
                let _ = self.child.kill().await;
                let stdout = self.stdout.lock().unwrap_or_else(|e| e.into_inner()).clone();
                panic!(
                    "{}",
                    overdue(
                        &self.command,
                        "its exit",
                        limit,
                        &stdout,
                        self.stderr.borrow().as_slice()
                    )
                );
            }
        };
        // The pipes end with it (unless a process it started holds them).
        let ends = &mut self.ends;
        let _ = tokio::time::timeout(PIPES_AFTER_EXIT, async {
            for end in ends {
                let _ = end.wait_for(|ended| *ended).await;
            }
        })
        .await;
        (status.code().unwrap_or(-1), self.stderr())
    }
}
