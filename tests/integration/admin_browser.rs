//! `/admin` in a real browser: headless Chromium driven over WebDriver (chromedriver, which
//! the test starts on a free port and stops at the end). A user consents through the
//! emulator's consent page, then the operator logs in, reads the grant's deadlines on the
//! timeline and mints a re-consent link. A screenshot of the page is saved as
//! `target/test-artifacts/admin.png` (and `admin-phone.png`, at a phone's width).
//!
//! Without chromedriver or Chromium on the machine, the test says SKIPPED and passes
//! (`scripts/test` installs Debian's `chromium` and `chromium-driver`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use sqlx::PgPool;

use crate::admin_page::{ADMIN_TOKEN, with_admin_token};

/// How long a page may take to appear (Chromium on a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(30);

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A chromedriver this test started; killed when dropped, whatever happened.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start(binary: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("chromedriver starts");
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until chromedriver answers `/status`.
    async fn ready(&self) {
        let status = format!("{}/status", self.url());
        for _ in 0..150 {
            if let Ok(response) = reqwest::get(&status).await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer on {status} within 15 s");
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Chromedriver, chromium: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": chromium,
            // Tests run as root: Chromium's sandbox refuses root, and /dev/shm may be small.
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1600"],
        }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .expect("a WebDriver session with headless Chromium")
}

async fn save_screenshot(browser: &Client, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    path
}

#[sqlx::test]
async fn admin_page_in_a_browser_shows_a_fresh_grant_and_mints_a_reconsent_link(pool: PgPool) {
    let Some(chromedriver) = on_path(&["chromedriver"]) else {
        eprintln!(
            "\n*** SKIPPED: admin browser test: no `chromedriver` on PATH \
             (apt-get install chromium chromium-driver) ***\n"
        );
        return;
    };
    let Some(chromium) = on_path(&["chromium", "chromium-browser", "google-chrome"]) else {
        eprintln!(
            "\n*** SKIPPED: admin browser test: no `chromium` on PATH \
             (apt-get install chromium chromium-driver) ***\n"
        );
        return;
    };
    let app = with_admin_token(pool).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    let driver = Chromedriver::start(&chromedriver);
    driver.ready().await;
    let browser = browser(&driver, &chromium).await;
    let result = drive(&app, &browser, &mia).await;
    let _ = browser.close().await;
    drop(driver);
    let screenshot = result.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("admin page screenshot: {}", screenshot.display());
}

/// The user's consent and the operator's visit; returns where the screenshot went.
async fn drive(
    app: &crate::support::TestApp,
    browser: &Client,
    account_id: &str,
) -> Result<PathBuf, fantoccini::error::CmdError> {
    // The user opens the invite and accepts on the emulator's consent page.
    browser
        .goto(app.sandbox.app.invite_link("Mia Krystof").as_str())
        .await?;
    let accept = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("button[name=decision][value=accept]"))
        .await?;
    let account = browser.find(Locator::Css("select#account_id")).await?;
    account.select_by_value(account_id).await?;
    accept.click().await?;
    // The emulator's page has a heading too: wait for atlassync's.
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//h1[text()='Connected']"))
        .await?;
    assert!(browser.source().await?.contains("acme"));

    // The operator opens /admin: a login form, no data.
    let admin = app.sandbox.http_base.join("admin").unwrap();
    browser.goto(admin.as_str()).await?;
    let form = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("login"))
        .await?;
    assert!(!browser.source().await?.contains("Mia Krystof"));
    // A wrong token first: the form again, with an error.
    form.find(Locator::Id("token"))
        .await?
        .send_keys("wrong-token")
        .await?;
    browser.form(Locator::Id("login")).await?.submit().await?;
    let error = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("login-error"))
        .await?;
    assert!(error.text().await?.contains("not the admin token"));
    browser
        .find(Locator::Id("token"))
        .await?
        .send_keys(ADMIN_TOKEN)
        .await?;
    browser.form(Locator::Id("login")).await?.submit().await?;

    // The grant, its deadlines and the timeline.
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("timeline"))
        .await?;
    let svg = browser.find(Locator::Css("svg.timeline")).await?;
    assert!(svg.text().await?.contains("Mia Krystof"));
    let card = browser.find(Locator::Css("article.grant")).await?;
    let text = card.text().await?;
    for expected in [
        "Mia Krystof",
        account_id,
        "active",
        "access token expires",
        "refresh idle deadline",
        "family deadline",
        "re-auth warning begins",
        "acme",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
    let marks = browser
        .find_all(Locator::Css("svg.timeline line.mark"))
        .await?;
    assert_eq!(marks.len(), 3, "access, idle and family deadline marks");
    let screenshot = save_screenshot(browser, "admin.png").await;

    // A fresh re-consent link, shown on the resulting page.
    card.find(Locator::Css("button.reconsent"))
        .await?
        .click()
        .await?;
    let link = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("reconsent-link"))
        .await?
        .text()
        .await?;
    assert!(link.contains("/connect?invite="), "{link}");

    // Back on the page, at a phone's width: still every grant, no horizontal scroll.
    browser.goto(admin.as_str()).await?;
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("timeline"))
        .await?;
    browser.set_window_size(390, 1400).await?;
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await?;
    assert_eq!(
        overflow,
        serde_json::Value::Bool(true),
        "no sideways scroll on a phone"
    );
    save_screenshot(browser, "admin-phone.png").await;
    Ok(screenshot)
}
