//! Headless Chromium driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: requests on fd 3, replies on fd 4, each message a
//! NUL-terminated JSON object), so a test can load a page and run JavaScript in it
//! without a WebSocket client.

use std::io::{BufRead, BufReader, PipeReader, PipeWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

pub struct Chromium {
    child: Child,
    requests: PipeWriter,
    replies: BufReader<PipeReader>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Start `$SEGCAM_CHROMIUM`, else `chromium` from PATH (Debian's package).
    pub fn start() -> Self {
        let program = std::env::var("SEGCAM_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = tempfile::tempdir().unwrap();
        let (their_requests, requests) = std::io::pipe().unwrap();
        let (replies, their_replies) = std::io::pipe().unwrap();
        let (r, w) = (their_requests.as_raw_fd(), their_replies.as_raw_fd());
        let mut command = Command::new(&program);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec. The ends are
        // first moved above 10 so that placing one on fd 3 cannot close the other.
        unsafe {
            command.pre_exec(move || {
                let r = libc::fcntl(r, libc::F_DUPFD, 10);
                let w = libc::fcntl(w, libc::F_DUPFD, 10);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {program} ({e}): install Debian's chromium (scripts/setup-test-tools) or set SEGCAM_CHROMIUM")
        });
        Self {
            child,
            requests,
            replies: BufReader::new(replies),
            next_id: 1,
            _profile: profile,
        }
    }

    /// Send one command (to a page when `session` is given) and wait for its reply.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.requests.write_all(&bytes).unwrap();
        loop {
            let mut raw = Vec::new();
            let n = self.replies.read_until(0, &mut raw).unwrap();
            assert!(
                n > 0,
                "chromium closed the pipe while we waited for {method}"
            );
            raw.pop();
            let reply: Value = serde_json::from_slice(&raw).unwrap();
            if reply["id"] == id {
                assert!(reply["error"].is_null(), "{method}: {}", reply["error"]);
                return reply["result"].clone();
            }
        }
    }

    /// Open `url` in a new tab; returns the session to talk to it.
    pub fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        let session = attached["sessionId"].as_str().unwrap().to_string();
        // Replies once the new document is committed (it may still be loading).
        let navigated = self.call(Some(&session), "Page.navigate", json!({ "url": url }));
        assert!(navigated["errorText"].is_null(), "{url}: {navigated}");
        session
    }

    /// Evaluate `expression` in the page, awaiting a promise; returns its value.
    pub fn evaluate(&mut self, session: &str, expression: &str) -> Value {
        let result = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "the page threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
