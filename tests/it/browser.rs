//! Headless Chromium for a test, driven over the W3C WebDriver protocol by ChromeDriver
//! (Debian's `chromium` and `chromium-driver`, which the test script installs): what
//! the page looks like to a person, after the browser parsed it.

use serde_json::{Value, json};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C name of an element reference in WebDriver's answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A ChromeDriver process and one browser session of it.
pub struct Browser {
    driver: Child,
    session: String,
    base: String,
    http: reqwest::Client,
}

impl Browser {
    /// Starts ChromeDriver on a free port and a headless Chromium session.
    pub async fn start() -> Browser {
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install Debian's chromium and chromium-driver \
                 (scripts/test.sh does)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut browser = Browser {
            driver,
            session: String::new(),
            base,
            http,
        };
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,1600"],
            },
        } } });
        let answer = browser.call("POST", "/session", capabilities).await;
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|answer| panic!("WebDriver {method} {path}: {answer}"))
    }

    /// A WebDriver command: its value, or the error WebDriver answered.
    async fn try_call(&self, method: &str, path: &str, body: Value) -> Result<Value, Value> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let response = request.send().await.expect("WebDriver request");
        let status = response.status();
        let answer: Value = response.json().await.expect("WebDriver JSON");
        if status.is_success() {
            Ok(answer["value"].clone())
        } else {
            Err(answer)
        }
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Sets the window's size, in CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.at("/window/rect"),
            json!({ "width": width, "height": height }),
        )
        .await;
    }

    /// Runs a script in the page; what it returns.
    pub async fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Opens a page and waits for it to load.
    pub async fn open(&self, url: &str) {
        self.call("POST", &self.at("/url"), json!({ "url": url }))
            .await;
    }

    /// The elements a CSS selector finds.
    pub async fn all(&self, css: &str) -> Vec<String> {
        let found = self
            .call(
                "POST",
                &self.at("/elements"),
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found
            .as_array()
            .map(|elements| {
                elements
                    .iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The rendered text of every element a CSS selector finds.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.all(css).await {
            let text = self
                .call(
                    "GET",
                    &self.at(&format!("/element/{element}/text")),
                    json!({}),
                )
                .await;
            texts.push(text.as_str().unwrap_or_default().to_string());
        }
        texts
    }

    /// The one element's text; fails when the selector finds none.
    pub async fn text(&self, css: &str) -> String {
        let texts = self.texts(css).await;
        assert!(!texts.is_empty(), "nothing matches {css:?}");
        texts.join("\n")
    }

    /// Waits until an element the selector finds shows `needle`: a click that submits
    /// a form returns before the next page is there.
    pub async fn wait_for_text(&self, css: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut texts = Vec::new();
            for element in self.all(css).await {
                // The old page's element may be gone by the time it is read: look again.
                let path = self.at(&format!("/element/{element}/text"));
                if let Ok(text) = self.try_call("GET", &path, json!({})).await {
                    texts.push(text.as_str().unwrap_or_default().to_string());
                }
            }
            if texts.iter().any(|t| t.contains(needle)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css:?} never showed {needle:?}: {texts:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types into the first element the selector finds.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.first(css).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{element}/value")),
            json!({ "text": text }),
        )
        .await;
    }

    /// Clicks the first element the selector finds.
    pub async fn click(&self, css: &str) {
        let element = self.first(css).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{element}/click")),
            json!({}),
        )
        .await;
    }

    async fn first(&self, css: &str) -> String {
        self.all(css)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("nothing matches {css:?}"))
    }

    /// The URL the browser shows.
    pub async fn url(&self) -> String {
        let url = self.call("GET", &self.at("/url"), json!({})).await;
        url.as_str().unwrap_or_default().to_string()
    }

    /// Writes a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let png = self.call("GET", &self.at("/screenshot"), json!({})).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        std::fs::write(path, bytes).expect("write the screenshot");
    }

    /// Ends the session, which ends Chromium.
    pub async fn close(self) {
        self.call("DELETE", &self.at(""), json!({})).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ChromeDriver leads a process group of its own: a test that failed before
        // `close` takes Chromium down with it.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}
