//! No token issued by the emulator appears in any database column or in the logs.
//! (It installs a global log subscriber; nextest runs every test in its own process.)

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use crate::support::TestApp;
use base64::Engine;
use sqlx::PgPool;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("trace,hyper=info,reqwest=debug,sqlx=debug")
            .with_writer(move || writer.clone())
            .init();
        logs
    })
}

#[sqlx::test]
async fn no_token_appears_in_any_column_or_log_line(pool: PgPool) {
    let logs = captured_logs();
    let app = TestApp::start(pool).await;
    let (_, account_id) = app.site_and_user("acme", "Mia Krystof", "Australia/Sydney");
    assert_eq!(app.consent("mia", &account_id).await.0, 200);
    // A second consent and a refresh give more tokens to look for.
    assert_eq!(app.consent("mia", &account_id).await.0, 200);

    let grant = {
        let mut conn = app.pool().acquire().await.unwrap();
        atlassync::store::grants::all_grants(&mut conn)
            .await
            .unwrap()
            .remove(0)
    };
    let keyring = app.sandbox.app.keyring();
    let refresh = grant.refresh_token(keyring).unwrap();
    let access = grant.access_token(keyring).unwrap().unwrap();
    let rotated = app.sandbox.app.tokens.refresh(&refresh).await.unwrap();
    let tokens = [
        refresh.expose().to_owned(),
        access.expose().to_owned(),
        rotated.access_token.expose().to_owned(),
        rotated.refresh_token.unwrap().expose().to_owned(),
    ];

    let dump = app.database_dump().await;
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logs.contains("grant stored"), "logs were captured");
    for token in &tokens {
        assert!(token.len() > 20);
        // The token itself, any long piece of it, and its base64 and hex forms.
        let pieces = [
            token.clone(),
            token[token.len() / 2..].to_owned(),
            base64::engine::general_purpose::STANDARD.encode(token),
            token
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        ];
        for piece in pieces {
            assert!(!dump.contains(&piece), "a token appears in the database");
            assert!(!logs.contains(&piece), "a token appears in the logs");
        }
    }
    let debug = format!("{:?} {:?} {:?}", grant, app.sandbox.app.config, refresh);
    for token in &tokens {
        assert!(
            !debug.contains(token.as_str()),
            "a token appears in Debug output"
        );
    }
}
