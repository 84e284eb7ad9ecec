//! A whole atlassync on one machine: the built-in emulator, the consent server and the
//! services, over a database you provide. The demo, the integration tests and the
//! benchmarks all run on it, so they exercise the real configuration path and real HTTP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::app::App;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::Keyring;
use atlassian_emulator::{ConsentDecision, Emulator, EmulatorConfig, EmulatorHandle};

/// Configuration keys (dotted, e.g. `tokens.keepalive_after`) mapped to TOML literals.
pub type Overrides = BTreeMap<String, String>;

/// A running emulator and consent server sharing one clock.
#[derive(Debug)]
pub struct Sandbox {
    /// The services, configured for the emulator and for serving at `http_base`.
    pub app: App,
    /// The running emulator; its methods add sites and users, queue consents, and so on.
    pub emulator: EmulatorHandle,
    /// Where the consent server listens.
    pub http_base: Url,
    dir: PathBuf,
    shutdown: CancellationToken,
}

impl Sandbox {
    /// Starts an emulator with `emulator_config` and a consent server on 127.0.0.1, both on
    /// `clock`, over `pool` (already migrated). `overrides` replace configuration keys.
    pub async fn start(
        pool: PgPool,
        clock: Arc<dyn Clock>,
        emulator_config: EmulatorConfig,
        overrides: &Overrides,
    ) -> anyhow::Result<Self> {
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let emulator = Emulator::start(emulator_config.clone(), clock.clone(), localhost)
            .await
            .context("starting the emulator")?;
        let listener = tokio::net::TcpListener::bind(localhost).await?;
        let http_addr = listener.local_addr()?;
        let http_base = Url::parse(&format!("http://{http_addr}/"))?;

        let dir = std::env::temp_dir().join(format!("atlassync-sandbox-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let key_file = dir.join("key");
        std::fs::write(&key_file, Keyring::generate_key_file_contents())?;

        let mut keys = Overrides::new();
        let mut set = |k: &str, v: String| {
            keys.insert(k.to_owned(), v);
        };
        let quoted = |s: &str| format!("{s:?}");
        // The pool is handed over directly; the URL only has to be well-formed.
        set(
            "database.url",
            quoted("postgres://sandbox@127.0.0.1/provided-pool"),
        );
        set("atlassian.client_id", quoted(&emulator_config.client_id));
        set(
            "atlassian.client_secret",
            quoted(&emulator_config.client_secret),
        );
        set(
            "atlassian.redirect_uri",
            quoted(http_base.join("callback")?.as_str()),
        );
        set(
            "atlassian.auth_base_url",
            quoted(emulator.base_url().as_str()),
        );
        set(
            "atlassian.api_base_url",
            quoted(emulator.base_url().as_str()),
        );
        set("atlassian.request_timeout", quoted("10s"));
        set("http.listen", quoted(&http_addr.to_string()));
        set("http.public_url", quoted(http_base.as_str()));
        set("crypto.key_file", quoted(&key_file.display().to_string()));
        keys.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        let toml: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let config = Config::from_toml(&toml).context("sandbox configuration")?;

        let app = App::new(config, pool, clock);
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::http::serve(app.clone(), listener, {
            let shutdown = shutdown.clone();
            async move { shutdown.cancelled().await }
        }));
        Ok(Self {
            app,
            emulator,
            http_base,
            dir,
            shutdown,
        })
    }

    /// A browser: follows redirects and keeps cookies, like the one a user opens links in.
    pub fn browser() -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .expect("the TLS backend initialises")
    }

    /// Has `account_id` consent through the real flow: invite link, state cookie,
    /// Atlassian's authorize redirect (answered at once by the emulator), callback. Returns
    /// the final page's status and body.
    pub async fn consent(
        &self,
        label: &str,
        decision: ConsentDecision,
    ) -> anyhow::Result<(u16, String)> {
        self.emulator.queue_consent(decision);
        let response = Self::browser()
            .get(self.app.invite_link(label))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// Stops the consent server and the emulator.
    pub fn stop(&self) {
        self.shutdown.cancel();
        self.emulator.shutdown();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
