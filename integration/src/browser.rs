//! Debian's headless Chromium driven through its WebDriver server (`chromedriver`, W3C protocol over
//! loopback HTTP): open a page, find elements by CSS selector, type, click, read text, run a script,
//! take a screenshot, and read the browser console.

use std::time::Duration;

use base64::Engine as _;
use meridian_testkit::{ChildGuard, free_port, http, require, wait_for};
use serde_json::{Value, json};

/// A browser session; the driver (and its browser) stop when dropped.
#[derive(Debug)]
pub struct Browser {
    addr: String,
    session: String,
    _driver: ChildGuard,
}

/// The W3C key for an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts `chromedriver` and a headless Chromium at 1280 × 900; `None` (after a `SKIPPED` line)
    /// when either is missing outside CI.
    pub fn start() -> Option<Browser> {
        let driver = require("chromedriver", "apt-get install chromium-driver")?;
        let chromium = require("chromium", "apt-get install chromium")?;
        let port = free_port();
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver: {e}"));
        let guard = ChildGuard(child);
        let addr = format!("127.0.0.1:{port}");
        wait_for("chromedriver", Duration::from_secs(30), || {
            http("GET", &addr, "/status", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                         "--disable-dev-shm-usage", "--no-first-run"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut b = Browser {
            addr,
            session: String::new(),
            _driver: guard,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Some(b)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let r = http(
            method,
            &self.addr,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let v: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}: {}", r.text()));
        assert!(
            r.status < 300,
            "webdriver {method} {path}: {}: {v}",
            r.status
        );
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits for the document to load.
    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The elements matching `css` (their references).
    pub fn find_all(&self, css: &str) -> Vec<String> {
        self.call(
            "POST",
            &self.s("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
    }

    /// Waits (up to `timeout`) for an element matching `css`.
    pub fn wait(&self, css: &str, timeout: Duration) -> String {
        wait_for(&format!("element {css}"), timeout, || {
            self.find_all(css).into_iter().next()
        })
    }

    pub fn click(&self, el: &str) {
        self.call(
            "POST",
            &self.s(&format!("/element/{el}/click")),
            Some(json!({})),
        );
    }

    /// Types `text` into an element (focused first).
    pub fn type_text(&self, el: &str, text: &str) {
        self.call(
            "POST",
            &self.s(&format!("/element/{el}/value")),
            Some(json!({ "text": text })),
        );
    }

    pub fn text(&self, el: &str) -> String {
        self.call("GET", &self.s(&format!("/element/{el}/text")), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// A PNG of the whole window.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot: {e}"))
    }

    /// A PNG of one element.
    pub fn element_screenshot(&self, el: &str) -> Vec<u8> {
        let b64 = self.call("GET", &self.s(&format!("/element/{el}/screenshot")), None);
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("screenshot: {e}"))
    }

    /// Console entries of level SEVERE since the last call (chromedriver's log endpoint).
    pub fn console_errors(&self) -> Vec<String> {
        let v = self.call("POST", &self.s("/se/log"), Some(json!({"type": "browser"})));
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http("DELETE", &self.addr, &self.s(""), &[], b"");
        }
    }
}
