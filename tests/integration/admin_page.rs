//! `/admin` over plain HTTP: who may see it, the session cookie, CSRF, escaping, and what
//! the page shows. The browser drives it in `admin_browser.rs`.

use atlassian_emulator::EmulatorConfig;
use atlassync::domain::SyncKind;
use atlassync::jobs::sync::Syncer;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use sqlx::PgPool;

use crate::support::{NowForTests, TestApp, overrides};

pub const ADMIN_TOKEN: &str = "adm1n-t0ken-for-tests-only";

/// A sandbox whose `http.admin_token` is [`ADMIN_TOKEN`].
pub async fn with_admin_token(pool: PgPool) -> TestApp {
    TestApp::start_with(
        pool,
        EmulatorConfig::default(),
        overrides(&[("http.admin_token", ADMIN_TOKEN)]),
    )
    .await
}

/// A client that shows redirects instead of following them, and keeps no cookies.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn url(app: &TestApp, path: &str) -> url::Url {
    app.sandbox.http_base.join(path).unwrap()
}

/// Logs in; returns the `Set-Cookie` header and the `name=value` pair to send back.
async fn log_in(app: &TestApp) -> (String, String) {
    let response = client()
        .post(url(app, "admin/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/admin");
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    (set_cookie, pair)
}

async fn get_admin(app: &TestApp, cookie: Option<&str>) -> (StatusCode, HeaderMap, String) {
    let mut request = client().get(url(app, "admin"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

/// The value of the first `name="csrf"` hidden field.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("the page has a CSRF field");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn assert_hardened(headers: &HeaderMap) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("script-src"),
        "no script is ever allowed: {csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");
}

#[sqlx::test]
async fn admin_page_is_disabled_without_an_admin_token(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    assert_eq!(app.consent("Mia Krystof", &mia).await.0, 200);

    let (status, headers, body) = get_admin(&app, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("http.admin_token"), "{body}");
    assert!(!body.contains("Mia Krystof"), "no data: {body}");
    assert_hardened(&headers);
    // Any bearer header, and any login, are refused too.
    let response = client()
        .get(url(&app, "admin"))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = client()
        .post(url(&app, "admin/login"))
        .form(&[("token", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(SET_COOKIE).is_none());
}

#[sqlx::test]
async fn admin_page_refuses_a_missing_or_wrong_token_and_shows_no_data(pool: PgPool) {
    let app = with_admin_token(pool).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    assert_eq!(app.consent("Mia Krystof", &mia).await.0, 200);

    let (status, headers, body) = get_admin(&app, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("name=\"token\""), "a login form: {body}");
    assert!(!body.contains("Mia Krystof"), "no data: {body}");
    assert_hardened(&headers);

    let wrong = client()
        .get(url(&app, "admin"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(!wrong.text().await.unwrap().contains("Mia Krystof"));

    let forged = get_admin(&app, Some("atlassync_admin=4102444800.abc.def")).await;
    assert_eq!(forged.0, StatusCode::UNAUTHORIZED);
    assert!(!forged.2.contains("Mia Krystof"));

    let refused = client()
        .post(url(&app, "admin/login"))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none(), "nothing set");
    let body = refused.text().await.unwrap();
    assert!(body.contains("not the admin token"), "{body}");
    assert!(!body.contains("Mia Krystof"));

    // The right bearer token is enough for a script, which gets the data but no forms.
    let script = client()
        .get(url(&app, "admin"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    let body = script.text().await.unwrap();
    assert!(body.contains("Mia Krystof"));
    assert!(!body.contains("name=\"csrf\""), "{body}");
}

#[sqlx::test]
async fn admin_login_sets_a_strict_http_only_cookie_and_the_page_shows_grants_alerts_and_runs(
    pool: PgPool,
) {
    let app = with_admin_token(pool).await;
    let (acme, mia) = app.site_and_user("acme", "Mia", "UTC");
    let (_, sam) = app.site_and_user("globex", "Sam", "UTC");
    assert_eq!(app.consent("Mia Krystof", &mia).await.0, 200);
    assert_eq!(app.consent("Sam Ortiz", &sam).await.0, 200);
    // Sam revokes the app: the next sweep marks the grant and opens an alert.
    app.sandbox.emulator.revoke_app(&sam);
    app.clock.advance(chrono::Duration::days(34));
    app.sweep(&app.refresher("worker")).await;
    // Then a Jira sync (after the sweep, which prunes old runs).
    app.sandbox.emulator.create_issues(&acme, "OPS", 3);
    let syncer = Syncer::new(app.sandbox.app.clone(), app.refresher("syncer"));
    app.clock.advance(chrono::Duration::seconds(1));
    syncer
        .run_once(
            SyncKind::JiraIncremental,
            app.clock.now_for_tests(),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();

    let (set_cookie, cookie) = log_in(&app).await;
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/admin",
        "Max-Age=43200",
    ] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "public_url is http: {set_cookie}"
    );
    assert!(!set_cookie.contains(ADMIN_TOKEN));

    let (status, headers, body) = get_admin(&app, Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_hardened(&headers);
    for expected in [
        "Mia Krystof",
        mia.as_str(),
        acme.as_str(),
        "Sam Ortiz",
        "needs_reauth",
        "access token expires",
        "refresh idle deadline",
        "family deadline",
        "re-auth warning begins",
        "<svg class=\"timeline\"",
        "read:jira-work",
        "jira_incremental",
        "3 upserted",
        "name=\"csrf\"",
    ] {
        assert!(body.contains(expected), "{expected} missing from {body}");
    }
    assert!(!body.contains(ADMIN_TOKEN), "the token never appears");
    assert!(!body.contains("<script"), "no script");
    // Both grants are listed, with a re-consent form each.
    assert_eq!(body.matches("class=\"reconsent\"").count(), 2);

    // The session expires with business time.
    app.clock.advance(chrono::Duration::hours(13));
    let (status, _, body) = get_admin(&app, Some(&cookie)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!body.contains("Mia Krystof"));
}

#[sqlx::test]
async fn admin_posts_without_the_csrf_token_are_refused(pool: PgPool) {
    let app = with_admin_token(pool).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    assert_eq!(app.consent("Mia Krystof", &mia).await.0, 200);
    let grant = app.grants().await.remove(0);
    let (_, cookie) = log_in(&app).await;
    let (_, _, page) = get_admin(&app, Some(&cookie)).await;
    let csrf = csrf_of(&page);
    let reconsent = url(&app, &format!("admin/grants/{}/reconsent", grant.id));

    let post = |form: Vec<(&'static str, String)>, cookie: Option<String>| {
        let mut request = client().post(reconsent.clone()).form(&form);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    for (form, with_cookie) in [
        (vec![], true),
        (vec![("csrf", String::new())], true),
        (vec![("csrf", format!("{csrf}x"))], true),
        // A valid token without the session it belongs to.
        (vec![("csrf", csrf.clone())], false),
    ] {
        let response = post(form.clone(), with_cookie.then(|| cookie.clone()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{form:?}");
        let body = response.text().await.unwrap();
        assert!(!body.contains("/connect?invite="), "no link: {body}");
    }
    // Even a bearer token does not replace the CSRF token on a form.
    let response = client()
        .post(reconsent.clone())
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Nor does another session's token.
    let (_, other_cookie) = log_in(&app).await;
    let response = post(vec![("csrf", csrf.clone())], Some(other_cookie))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let response = post(vec![("csrf", csrf.clone())], Some(cookie.clone()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = response.text().await.unwrap();
    assert!(body.contains("/connect?invite="), "{body}");
    assert_eq!(
        app.database_dump().await.matches("invite=").count(),
        0,
        "the link is not stored"
    );

    // Logging out needs the token too, and then clears the cookie.
    let logout = url(&app, "admin/logout");
    let response = client()
        .post(logout.clone())
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = client()
        .post(logout)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cleared = response.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cleared.starts_with("atlassync_admin=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

#[sqlx::test]
async fn admin_page_escapes_a_label_containing_markup(pool: PgPool) {
    let app = with_admin_token(pool).await;
    let (_, mia) = app.site_and_user("acme", "Mia", "UTC");
    let label = "<script>alert('x')</script>\"><img src=x>";
    assert_eq!(app.consent(label, &mia).await.0, 200);
    let (_, cookie) = log_in(&app).await;
    let (status, _, body) = get_admin(&app, Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("<script"), "{body}");
    assert!(!body.contains("<img"), "{body}");
    assert!(body.contains("&#60;script&#62;"), "escaped: {body}");

    let grant = app.grants().await.remove(0);
    let response = client()
        .post(url(&app, &format!("admin/grants/{}/reconsent", grant.id)))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf_of(&body))])
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap();
    assert!(!body.contains("<script"), "{body}");
    assert!(body.contains("&#60;script&#62;"), "escaped: {body}");
}
