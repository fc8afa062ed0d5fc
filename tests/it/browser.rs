//! A real browser for the dashboard's tests: Debian's Chromium, headless, driven over the W3C
//! WebDriver protocol by Debian's `chromedriver` (one per browser, on a loopback port of its
//! own), with axe-core (npm) injected to check each page's accessibility. Screenshots go to
//! `target/tmp/screenshots/`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The axe-core release the pages are checked with.
const AXE: (&str, &str) = ("axe-core", "4.11.4");

/// A browser session; closed, and its driver stopped, when dropped.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, 1280×900.
    pub fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (package chromium-driver, installed by .ci/run)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while request(addr, "GET", "/status", None).is_none_or(|s| s["value"]["ready"] != true) {
            assert!(started.elapsed() < Duration::from_secs(30), "chromedriver is not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
        }}});
        let created = request(addr, "POST", "/session", Some(&capabilities)).expect("chromedriver answers");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        Browser { driver, addr, session }
    }

    /// A command of this session: its `value`, or a panic naming the WebDriver error.
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let answer = request(self.addr, method, &path, body).expect("chromedriver answers");
        assert!(
            answer["value"]["error"].is_null(),
            "{method} {path}: {}",
            answer["value"]
        );
        answer["value"].clone()
    }

    /// Opens `url` and waits until it has loaded.
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The current page's title.
    pub fn title(&self) -> String {
        self.command("GET", "/title", None).as_str().unwrap().to_owned()
    }

    /// Waits (10 s at most) until the page's title is `title`: a form's answer has loaded.
    pub fn wait_for_title(&self, title: &str) {
        let started = Instant::now();
        while self.title() != title {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the page is still `{}`, not `{title}`",
                self.title()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (10 s at most) until the page's address holds `part`: a form's answer has loaded.
    pub fn wait_for_url(&self, part: &str) {
        let started = Instant::now();
        let url = || {
            self.command("GET", "/url", None)
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        while !url().contains(part) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the page is still {}",
                url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The element `css` selects first: its WebDriver reference.
    fn find(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }

    /// Clicks the element `css` selects (and waits for the page it loads, if any).
    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.command("POST", &format!("/element/{element}/click"), Some(&json!({})));
    }

    /// Types `text` into the element `css` selects.
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(&json!({"text": text})),
        );
    }

    /// The visible text of every element `css` selects, in order, read at one instant (a
    /// page that follows the agent may replace its elements between two requests).
    pub fn texts(&self, css: &str) -> Vec<String> {
        let script = "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText.trim());";
        let found = self.command("POST", "/execute/sync", Some(&json!({"script": script, "args": [css]})));
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }

    /// Presses the Tab key `times` times, then Enter: the page as a keyboard reaches it.
    pub fn tab_and_enter(&self, times: usize) {
        let mut keys: Vec<Value> = Vec::new();
        for _ in 0..times {
            keys.push(json!({"type": "keyDown", "value": "\u{E004}"}));
            keys.push(json!({"type": "keyUp", "value": "\u{E004}"}));
        }
        keys.push(json!({"type": "keyDown", "value": "\u{E007}"}));
        keys.push(json!({"type": "keyUp", "value": "\u{E007}"}));
        self.command(
            "POST",
            "/actions",
            Some(&json!({"actions": [{"type": "key", "id": "keyboard", "actions": keys}]})),
        );
    }

    /// Runs `script` in the page; what it returns.
    pub fn script(&self, script: &str) -> Value {
        self.command("POST", "/execute/sync", Some(&json!({"script": script, "args": []})))
    }

    /// Writes a screenshot of the page to `target/tmp/screenshots/<name>.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let png = self.command("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// What axe-core finds wrong with the page at impact `serious` or `critical`: each rule
    /// with its help and the elements it names.
    pub fn serious_accessibility_violations(&self) -> Vec<String> {
        let axe = std::fs::read_to_string(crate::harness::npm_file(AXE.0, AXE.1, "axe.min.js")).unwrap();
        self.command("POST", "/execute/sync", Some(&json!({"script": axe, "args": []})));
        let script = "const done = arguments[arguments.length - 1];\
            axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations), e => done(String(e)));";
        let violations = self.command("POST", "/execute/async", Some(&json!({"script": script, "args": []})));
        let violations = violations
            .as_array()
            .unwrap_or_else(|| panic!("axe-core failed: {violations}"));
        violations
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .map(|v| {
                let targets: Vec<String> = v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| n["target"].to_string())
                    .collect();
                format!("{} ({}): {}", v["id"], v["help"], targets.join(", "))
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(self.addr, "DELETE", &format!("/session/{}", self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver request: its JSON answer, or `None` when the driver does not answer.
fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Option<Value> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    // chromedriver keeps the connection open whatever the request says: the answer ends at
    // its length.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let (split, length) = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&chunk[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|l| l.trim().parse::<usize>().ok())
                .expect("chromedriver answers with a length");
            break (end + 4, length);
        }
    };
    while raw.len() < split + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    serde_json::from_slice(&raw[split..split + length]).ok()
}
