//! Headless Chromium for the dashboard's tests: a small W3C WebDriver client over
//! `ureq` that starts Debian's `chromedriver` on a free port of 127.0.0.1, opens one
//! browser session with a fresh profile, and ends both when dropped.
//!
//! [`Browser::start`] is None (the test is skipped) when Chromium or its driver is
//! not installed, unless `CMS_E2E_REQUIRED=1`, where that fails the test
//! (`tests/run.sh` installs them). `CMS_CHROMIUM` and `CMS_CHROMEDRIVER` name other
//! executables.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The key of a web element's id in WebDriver's answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Browsers open at once in this test process (each is a few processes; the
/// machine may have 2 cores): more wait for one to end.
const AT_ONCE: usize = 2;
static OPEN: Mutex<usize> = Mutex::new(0);
static CLOSED: Condvar = Condvar::new();

/// A place among the [`AT_ONCE`] browsers, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Slot {
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        while *open >= AT_ONCE {
            open = CLOSED.wait(open).unwrap_or_else(|p| p.into_inner());
        }
        *open += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *OPEN.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        CLOSED.notify_one();
    }
}

/// The Chromium executable and its driver: `CMS_CHROMIUM` / `CMS_CHROMEDRIVER`, or
/// Debian's. None (with a note) when one is missing, unless `CMS_E2E_REQUIRED=1`.
pub fn chromium() -> Option<(PathBuf, PathBuf)> {
    let browser = std::env::var_os("CMS_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            // The real binary, not the /usr/bin/chromium shell wrapper.
            ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .filter(|p| p.is_file());
    let driver = std::env::var_os("CMS_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| on_path("chromedriver"))
        .filter(|p| p.is_file());
    match (browser, driver) {
        (Some(b), Some(d)) => Some((b, d)),
        _ => {
            let why = "Chromium or chromedriver is not installed (apt-get install chromium chromium-driver, \
                       or set CMS_CHROMIUM and CMS_CHROMEDRIVER)";
            if std::env::var("CMS_E2E_REQUIRED").as_deref() == Ok("1") {
                panic!("CMS_E2E_REQUIRED=1 but {why}");
            }
            eprintln!("skipping: {why}");
            None
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A web element found on the page.
#[derive(Clone, Debug)]
pub struct Element(String);

/// One headless Chromium, driven through chromedriver; both end when dropped.
pub struct Browser {
    driver: Child,
    /// `http://127.0.0.1:PORT` of chromedriver.
    at: String,
    session: String,
    agent: ureq::Agent,
    /// The browser's own profile (`--user-data-dir`), gone with it.
    profile: tempfile::TempDir,
    _slot: Slot,
}

impl Browser {
    /// A new browser whose page's viewport is `width` x `height` CSS pixels (a
    /// desktop's; see [`Browser::emulate`] for a phone's); None when Chromium is not
    /// installed (see [`chromium`]).
    pub fn start(width: u32, height: u32) -> Option<Browser> {
        let (chrome, driver_bin) = chromium()?;
        let slot = Slot::take();
        let profile = tempfile::tempdir().unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let port = free_port();
        let log = profile.path().join("chromedriver.log");
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_bin.display()));
        let at = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            driver,
            at,
            session: String::new(),
            agent,
            profile,
            _slot: slot,
        };
        let ready = super::eventually(Duration::from_secs(10), || {
            b.request("GET", "/status", None)
                .is_ok_and(|v| v["ready"] == true)
        });
        assert!(
            ready,
            "chromedriver did not answer on {} within 10 s (its log: {})",
            b.at,
            log.display()
        );
        let mut args = vec![
            "--headless=new".to_string(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--disable-features=Translate,OptimizationHints,MediaRouter".into(),
            "--hide-scrollbars".into(),
            format!(
                "--user-data-dir={}",
                b.profile.path().join("chrome").display()
            ),
            format!("--window-size={width},{height}"),
        ];
        // SAFETY: a plain query.
        if unsafe { libc::geteuid() } == 0 {
            // Chromium's own sandbox refuses to run as root.
            args.push("--no-sandbox".into());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"implicit": 0, "pageLoad": 15000, "script": 10000},
            "goog:chromeOptions": {"binary": chrome, "args": args},
        }}});
        let v = b
            .request("POST", "/session", Some(caps))
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start {}: {e} (its log: {})",
                    chrome.display(),
                    log.display()
                )
            });
        b.session = v["sessionId"].as_str().unwrap_or_default().to_string();
        assert!(
            !b.session.is_empty(),
            "no session id from chromedriver: {v}"
        );
        // The window holds (invisible) browser chrome: make the page's viewport the size asked.
        let chrome = b.script(
            "return [outerWidth - innerWidth, outerHeight - innerHeight]",
            json!([]),
        );
        let extra = |i: usize| chrome[i].as_u64().unwrap_or(0) as u32;
        b.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width + extra(0), "height": height + extra(1)})),
        )
        .unwrap_or_else(|e| panic!("cannot size the window: {e}"));
        Some(b)
    }

    /// A WebDriver command: its answer's `value`, or the error it names.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.at);
        let answer = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self
                .agent
                .post(&url)
                .send_json(body.unwrap_or_else(|| json!({}))),
        };
        let mut answer = answer.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = answer.status();
        let v: Value = answer
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_json()
            .map_err(|e| format!("{method} {path}: {status}, unreadable answer: {e}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "{method} {path}: {} ({})",
                value["error"].as_str().unwrap_or("error"),
                value["message"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
            ))
        }
    }

    /// A command of this browser session.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.request(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Open `url` and wait for it to load.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The address of the page shown.
    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The first element matching CSS `selector`, if any.
    pub fn find(&self, selector: &str) -> Option<Element> {
        self.find_all(selector).into_iter().next()
    }

    /// Every element matching CSS `selector`.
    pub fn find_all(&self, selector: &str) -> Vec<Element> {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": selector})),
        )
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_string())))
        .collect()
    }

    /// The element matching `selector`; a panic saying what the page shows when none does.
    pub fn get(&self, selector: &str) -> Element {
        self.find(selector).unwrap_or_else(|| {
            panic!(
                "no element {selector} on {}; the page says:\n{}",
                self.url(),
                self.page_text()
            )
        })
    }

    /// Click the element matching `selector`.
    pub fn click(&self, selector: &str) {
        let e = self.get(selector);
        self.click_on(&e)
            .unwrap_or_else(|err| panic!("cannot click {selector}: {err}"));
    }

    pub fn click_on(&self, e: &Element) -> Result<(), String> {
        self.cmd("POST", &format!("/element/{}/click", e.0), None)
            .map(drop)
    }

    /// Type `text` into the element matching `selector` (after what it holds).
    pub fn type_into(&self, selector: &str, text: &str) {
        let e = self.get(selector);
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .unwrap_or_else(|err| panic!("cannot type into {selector}: {err}"));
    }

    /// The text the element matching `selector` shows (None: no such element).
    pub fn text(&self, selector: &str) -> Option<String> {
        let e = self.find(selector)?;
        self.text_of(&e)
    }

    pub fn text_of(&self, e: &Element) -> Option<String> {
        self.cmd("GET", &format!("/element/{}/text", e.0), None)
            .ok()?
            .as_str()
            .map(str::to_string)
    }

    /// Everything the page's body shows, as text.
    pub fn page_text(&self) -> String {
        self.script(
            "return document.body ? document.body.innerText : ''",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Run `js` (a function body; `arguments` holds `args`) in the page; what it returns.
    pub fn script(&self, js: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": args})),
        )
        .unwrap_or_else(|e| panic!("the script failed: {e}\n{js}"))
    }

    /// Run `js` in the page; it ends by calling its last argument
    /// (`arguments[arguments.length - 1]`) with the result, within 10 s.
    pub fn script_async(&self, js: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": js, "args": args})),
        )
        .unwrap_or_else(|e| panic!("the script failed: {e}\n{js}"))
    }

    /// Wait up to `within` for `ok` to hold, polling; a panic saying `what` was
    /// awaited and what the page shows when it does not.
    pub fn wait_until(&self, within: Duration, what: &str, mut ok: impl FnMut(&Browser) -> bool) {
        let start = Instant::now();
        if super::eventually(within, || ok(self)) {
            return;
        }
        panic!(
            "waited {:?} for {what}, in vain; {} says:\n{}",
            start.elapsed(),
            self.url(),
            self.page_text()
        );
    }

    /// Wait up to `within` for an element matching `selector`.
    pub fn wait_for(&self, within: Duration, selector: &str) -> Element {
        let mut found = None;
        self.wait_until(within, &format!("an element {selector}"), |b| {
            found = b.find(selector);
            found.is_some()
        });
        found.unwrap()
    }

    /// Show the page as a phone of `width` x `height` CSS pixels would (touch, the
    /// page's `<meta name=viewport>` honoured), or as a desktop window when `mobile`
    /// is false.
    pub fn emulate(&self, width: u32, height: u32, mobile: bool) {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(
                json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                    "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
                }}),
            ),
        )
        .unwrap_or_else(|e| panic!("cannot emulate a {width}x{height} screen: {e}"));
    }

    /// The page as shown, as a PNG written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self
            .cmd("GET", "/screenshot", None)
            .unwrap_or_else(|e| panic!("cannot take a screenshot: {e}"));
        let png = base64_decode(v.as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("the screenshot is not base64"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// The browser's processes (their command line names its profile).
    fn processes(&self) -> Vec<i32> {
        let marker = self.profile.path().to_string_lossy().into_owned();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).contains(&marker)
            })
            .collect()
    }
}

impl Drop for Browser {
    /// End the browser session (chromedriver closes Chromium), then chromedriver;
    /// any of this browser's processes still there are killed.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.cmd("DELETE", "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        for pid in self.processes() {
            // SAFETY: a signal to a process of this browser (its profile in its command line).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// A port of 127.0.0.1 free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Standard base64 (with padding) decoded; None if it is not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let body = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="));
    let body = body.unwrap_or(&bytes);
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}

#[test]
fn base64_decodes_what_it_should() {
    assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
    assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
    assert_eq!(base64_decode("aA==").unwrap(), b"h");
    assert!(base64_decode("a$==").is_none());
}
