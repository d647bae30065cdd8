//! End-to-end: labd's live page at `/`, loaded in headless Chromium (Debian's `chromium`), shows
//! each lab's services and networks with the conditions on each attachment, and recolours a
//! service removed by hand. A screenshot is saved as target/artifacts/web-page.png.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(90);
const PORT: u16 = 19466;

/// The page after its script ran (Chromium's virtual time lets the fetch and the drawing happen).
fn dom() -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("http://127.0.0.1:{PORT}/"))
        .output()
        .expect("chromium runs (scripts/setup.sh installs Debian's chromium)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The fill colour of a service's box on the page.
fn fill_of(dom: &str, service: &str) -> Option<String> {
    let group = dom.split(&format!("data-name=\"{service}\"")).nth(1)?;
    Some(group.split("fill=\"").nth(1)?.split('"').next()?.to_string())
}

#[test]
fn the_live_page_shows_every_lab_and_recolours_a_service_removed_by_hand() {
    let mut lab = Lab::new();
    lab.cleanup.push("page".into());
    remove_lab_objects("page");
    lab.write(
        "page.yaml",
        "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: page}\nspec:\n  defaults: {image: labbox:latest, init: true, stopGracePeriod: 1s, command: [sleep, \"100000\"], networks: [lan]}\n  networks:\n    lan: {conditions: {delay: 5ms}}\n  services:\n    web: {}\n    db: {}\n",
    );
    lab.start_labd_args(&["--http", &format!("127.0.0.1:{PORT}")]);
    lab.wait_phase("page", "Ready", READY);
    let page = eventually("the page to draw the lab", Duration::from_secs(30), || {
        let d = dom();
        if d.contains("data-lab=\"page\"") && d.contains("data-phase=\"Ready\"") { Ok(d) } else { Err(d) }
    });
    assert_eq!(fill_of(&page, "web").as_deref(), Some("#c8ecc8"), "running services are green:\n{page}");
    assert_eq!(fill_of(&page, "db").as_deref(), Some("#c8ecc8"));
    assert!(page.contains("data-name=\"lan\"") && page.contains("delay 5ms"), "the network and its conditions:\n{page}");
    assert!(page.contains("<td>Ready</td>") && page.contains("create service page_web"), "recent events in the table:\n{page}");
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("web-page.png");
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=5000", "--window-size=1000,600", "--hide-scrollbars"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://127.0.0.1:{PORT}/"))
        .output()
        .unwrap();
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    println!("screenshot: {}", shot.display());

    // Suspended, so labd does not put it back at once: the removal stays visible.
    lab.labctl(&["suspend", "page"]);
    lab.wait_phase("page", "Suspended", READY);
    docker_ok(&["service", "rm", "page_db"]);
    let page = eventually("db to turn red", Duration::from_secs(30), || {
        let d = dom();
        if fill_of(&d, "db").as_deref() == Some("#f4c2c2") { Ok(d) } else { Err(format!("{:?}", fill_of(&d, "db"))) }
    });
    assert_eq!(fill_of(&page, "web").as_deref(), Some("#c8ecc8"), "web still runs");
    assert!(page.contains("data-phase=\"Suspended\""));
    assert!(page.contains("<td>Ready</td>"), "the events table stays");
    lab.labctl(&["resume", "page"]);
    lab.wait_phase("page", "Ready", READY);
}
