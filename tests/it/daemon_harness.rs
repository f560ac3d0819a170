//! A `cleeng-sync daemon` process for a test: started with a config file on port 0,
//! its address read from its logs, talked to over HTTP, stopped with SIGTERM.

use crate::common::Env;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The token the tests configure.
pub const TOKEN: &str = "test-token-0b6f";

/// A running daemon.
pub struct Daemon {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The webhook listener's `http://127.0.0.1:PORT`, when one is configured.
    pub hooks: Option<String>,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl Env {
    /// Starts `cleeng-sync --config FILE daemon`, with `token` as
    /// `CLEENG_SYNC_SERVER_TOKEN`, and waits until its admin API listens.
    pub fn daemon(&self, config: &Path, token: Option<&str>) -> Daemon {
        self.daemon_with(config, token, &[])
    }

    /// [`Env::daemon`] with more environment variables.
    pub fn daemon_with(&self, config: &Path, token: Option<&str>, vars: &[(&str, &str)]) -> Daemon {
        let config = config.display().to_string();
        let mut command = self.command(&["--config", &config, "--log-format", "json", "daemon"]);
        if let Some(token) = token {
            command.env("CLEENG_SYNC_SERVER_TOKEN", token);
        }
        command.envs(vars.iter().copied());
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let kept = Arc::clone(&logs);
        let hooks = Arc::new(Mutex::new(None));
        let hooks_seen = Arc::clone(&hooks);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    // The webhook listener is bound before the admin API logs its address.
                    if let Some(address) = event["webhook_address"].as_str() {
                        *hooks_seen.lock().expect("hooks") = Some(format!("http://{address}"));
                    }
                    if let Some(address) = event["address"].as_str() {
                        let _ = address_tx.send(address.to_string());
                    }
                }
                kept.lock().expect("logs").push(line);
            }
        });
        let address = match address_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the daemon did not start listening; its logs:\n{}",
                    logs.lock().expect("logs").join("\n")
                );
            }
        };
        let hooks = hooks.lock().expect("hooks").clone();
        Daemon {
            child,
            base: format!("http://{address}"),
            hooks,
            logs,
            // Redirects are answers to look at (the status page's form), not to follow.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
        }
    }
}

impl Daemon {
    /// GET a path: status and body (JSON when it is JSON, else a string).
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.expect("GET")).await
    }

    /// POST to a path: status and body.
    pub async fn post(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.expect("POST")).await
    }

    /// POST a JSON body with these headers: status and body.
    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.send().await.expect("POST")).await
    }

    /// POST a form (`application/x-www-form-urlencoded`); the answer as it came.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .expect("POST")
    }

    /// GET a path with these headers, as text: status and body.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("GET");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// GET a path as text: status and body.
    pub async fn get_text(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("GET");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// Sends a request of any method to a path; its status.
    pub async fn status_of(&self, method: &str, path: &str, token: Option<&str>) -> u16 {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request").status().as_u16()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get("/readyz", None).await;
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "never ready: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until run `id` has finished and returns it as `/v1/runs/{id}` shows it.
    pub async fn finished_run(&self, id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, run) = self.get(&format!("/v1/runs/{id}"), None).await;
            assert_eq!(status, 200, "{run}");
            if run["outcome"] != "running" {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} never finished: {run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and returns the exit code.
    pub async fn terminate(&mut self) -> i32 {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        self.exit_code().await
    }

    /// Kills the process with SIGKILL, as a crash or an OOM kill would.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// Waits for the process to end.
    pub async fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop; its logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}
