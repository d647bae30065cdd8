//! End-to-end: labd's live page at `/`, loaded once in headless Chromium (Debian's `chromium`,
//! read over the DevTools protocol), shows each lab's services and networks with the conditions
//! on each attachment as they come, and recolours a service removed by hand, without a reload. A screenshot is saved as target/artifacts/web-page.png.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(90);
const PORT: u16 = 19466;

/// Headless Chromium driven over the DevTools protocol: the page is loaded once and read as it
/// changes (what a person watching it sees), so an update has to be pushed to the page.
struct Browser {
    child: std::process::Child,
    socket: tungstenite::WebSocket<std::net::TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1000,600", "--hide-scrollbars"])
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromium runs (scripts/setup.sh installs Debian's chromium)");
        // Chromium writes the port it chose into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = eventually("chromium's DevTools port", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&port_file).map_err(|e| e.to_string())?;
            text.lines().next().and_then(|l| l.trim().parse().ok()).ok_or(text)
        });
        let page_socket = eventually("the page's DevTools target", Duration::from_secs(30), || {
            let list = http_get(port, "/json/list")?;
            let targets: serde_json::Value = serde_json::from_str(&list).map_err(|e| e.to_string())?;
            targets.as_array().into_iter().flatten().find(|t| t["type"] == "page").and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string)).ok_or(list)
        });
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (socket, _) = tungstenite::client(page_socket.as_str(), stream).expect("DevTools websocket");
        Browser { child, socket, next_id: 0, _profile: profile }
    }

    /// Sends one DevTools command and returns its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        self.socket.send(tungstenite::Message::text(serde_json::json!({"id": id, "method": method, "params": params}).to_string())).unwrap();
        loop {
            let message = self.socket.read().expect("DevTools answers");
            let Ok(text) = message.to_text() else { continue };
            let reply: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            if reply["id"] == id {
                return reply["result"].clone();
            }
        }
    }

    /// The page's DOM as it is now.
    fn dom(&mut self) -> String {
        let r = self.call("Runtime.evaluate", serde_json::json!({"expression": "document.documentElement.outerHTML", "returnByValue": true}));
        r["result"]["value"].as_str().unwrap_or_default().to_string()
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", serde_json::json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap_or_default()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fill colour of a service's box on the page.
fn fill_of(dom: &str, service: &str) -> Option<String> {
    let group = dom.split(&format!("data-name=\"{service}\"")).nth(1)?;
    Some(group.split("fill=\"").nth(1)?.split('"').next()?.to_string())
}

fn http_get(port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    // Read up to Content-Length: Chromium's DevTools server keeps the connection open.
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        bytes.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&bytes).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()));
            if n == 0 || length.is_some_and(|len| body.len() >= len) {
                return Ok(body.to_string());
            }
        } else if n == 0 {
            return Err(format!("no HTTP answer: {text}"));
        }
    }
}

/// The traffic the page wrote on the edge of `service`'s attachment to `network`.
fn edge_traffic(dom: &str, service: &str, network: &str) -> Option<String> {
    let edge = &dom[dom.find(&format!("class=\"attachment\" data-service=\"{service}\" data-network=\"{network}\""))?..];
    let text = &edge[edge.find("class=\"traffic\"")?..edge.find("</g>")?];
    Some(text[text.find('>')? + 1..text.find("</text>")?].to_string())
}

#[test]
fn the_live_page_shows_every_lab_and_recolours_a_service_removed_by_hand() {
    let mut lab = Lab::new();
    lab.cleanup.push("page".into());
    remove_lab_objects("page");
    lab.write(
        "page.yaml",
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: page}\nspec:\n  defaults: {image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [lan]}\n  networks:\n    lan: {conditions: {delay: 5ms}}\n  services:\n    web: {command: [sh, -c, 'while true; do ping -c 1 -s 1000 db; sleep 0.1; done']}\n    db: {}\n",
    );
    lab.start_labd_args(&["--http", &format!("127.0.0.1:{PORT}"), "--usage-interval", "1s"]);
    eventually("labd's HTTP endpoint", Duration::from_secs(30), || http_get(PORT, "/healthz"));
    // Opened before the lab is Ready: what follows reaches the page without a reload.
    let mut browser = Browser::open(&format!("http://127.0.0.1:{PORT}/"));
    lab.wait_phase("page", "Ready", READY);
    let page = eventually("the page to draw the lab Ready", Duration::from_secs(30), || {
        let d = browser.dom();
        if d.contains("data-lab=\"page\"") && d.contains("data-phase=\"Ready\"") && d.contains("<td>Ready</td>") { Ok(d) } else { Err(d) }
    });
    assert_eq!(fill_of(&page, "web").as_deref(), Some("#c8ecc8"), "running services are green:\n{page}");
    assert_eq!(fill_of(&page, "db").as_deref(), Some("#c8ecc8"));
    assert!(page.contains("data-name=\"lan\"") && page.contains("delay 5ms"), "the network and its conditions:\n{page}");
    assert!(page.contains("create service page_web"), "recent events in the table:\n{page}");
    // What each service uses, from the agents' samples, under the lab's drawing.
    let page = eventually("the usage of web and db under the lab", Duration::from_secs(30), || {
        let d = browser.dom();
        if ["web", "db"].iter().all(|s| d.contains(&format!("<tr class=\"usage\" data-service=\"{s}\"><td>{s}</td><td>1</td>"))) { Ok(d) } else { Err(d) }
    });
    assert!(page.contains("iB</td>") && page.contains("<td>lan: "), "memory, and traffic per lab network:\n{page}");
    // web pings db with 1 kB packets ~9 times a second: the edges carry it, both ways.
    eventually("the traffic on the web and db edges", Duration::from_secs(30), || {
        let d = browser.dom();
        let (web, db) = (edge_traffic(&d, "web", "lan"), edge_traffic(&d, "db", "lan"));
        if [&web, &db].iter().all(|t| t.as_deref().is_some_and(|t| t.starts_with("↓ ") && t.contains("kB/s  ↑ ") && t.ends_with("kB/s"))) { Ok(d) } else { Err(format!("{web:?} {db:?}")) }
    });
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("web-page.png");
    browser.screenshot(&shot);
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 1000).unwrap_or(false), "no screenshot");
    println!("screenshot: {}", shot.display());

    // Suspended, so labd does not put it back at once: the removal stays visible.
    lab.labctl(&["suspend", "page"]);
    lab.wait_phase("page", "Suspended", READY);
    docker_ok(&["service", "rm", "page_db"]);
    let page = eventually("db to turn red", Duration::from_secs(30), || {
        let d = browser.dom();
        if fill_of(&d, "db").as_deref() == Some("#f4c2c2") { Ok(d) } else { Err(format!("{:?}", fill_of(&d, "db"))) }
    });
    assert_eq!(fill_of(&page, "web").as_deref(), Some("#c8ecc8"), "web still runs");
    assert!(page.contains("data-phase=\"Suspended\""));
    assert!(page.contains("<td>Ready</td>"), "the events table stays");
    lab.labctl(&["resume", "page"]);
    lab.wait_phase("page", "Ready", READY);
}
