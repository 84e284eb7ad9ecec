//! The HTML the emulator's authorization server shows: the consent page and error pages.
//! Every interpolated value goes through [`escape`].

use std::fmt::Write as _;

use super::state::{AuthorizeRequest, ConsentChoice};

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;max-width:40em;margin:2em auto;color:#172b4d}\
h1{font-size:1.4em}fieldset{margin:1em 0}button{margin-right:1em;padding:.4em 1.2em}\
.hint{color:#6b778c;font-size:.9em}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        title = escape(title),
    )
}

/// An error page for requests that cannot be redirected back to the app.
pub(crate) fn error_page(message: &str) -> String {
    page(
        "Something went wrong",
        &format!(
            "<h1>Something went wrong</h1><p id=\"error\">{}</p>\
<p class=\"hint\">Atlassian Cloud emulator</p>",
            escape(message)
        ),
    )
}

/// The consent screen: account picker, site checkboxes, requested scopes, Accept / Deny.
/// Posts to `/authorize/decision` with the parked request id.
pub(crate) fn consent_page(
    request_id: &str,
    request: &AuthorizeRequest,
    users: &[ConsentChoice],
) -> String {
    let mut body = String::new();
    body.push_str("<h1>An app wants to access your Atlassian account</h1>");
    let _ = write!(
        body,
        "<p>App <code>{}</code> is requesting access.</p>",
        escape(&request.client_id)
    );
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/authorize/decision\">\
<input type=\"hidden\" name=\"request_id\" value=\"{}\">",
        escape(request_id)
    );

    body.push_str("<fieldset><legend>Atlassian account</legend>");
    if users.is_empty() {
        body.push_str(
            "<p>No accounts exist yet; add one with <code>POST /_emulator/users</code>.</p>",
        );
    } else {
        body.push_str("<select name=\"account_id\" id=\"account_id\">");
        for user in users {
            let _ = write!(
                body,
                "<option value=\"{}\">{} &lt;{}&gt;</option>",
                escape(&user.account_id),
                escape(&user.name),
                escape(&user.email)
            );
        }
        body.push_str("</select>");
    }
    body.push_str("</fieldset>");

    body.push_str("<fieldset><legend>Sites to grant</legend>");
    // One checkbox per site, tagged with the accounts that can grant it; the script shows the
    // chosen account's sites only. The server checks the choice either way.
    let mut sites: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for user in users {
        for (cloud_id, name) in &user.sites {
            match sites.iter_mut().find(|(id, _, _)| id == cloud_id) {
                Some((_, _, accounts)) => accounts.push(&user.account_id),
                None => sites.push((cloud_id, name, vec![&user.account_id])),
            }
        }
    }
    if sites.is_empty() {
        body.push_str("<p class=\"hint\">No sites available.</p>");
    }
    for (cloud_id, name, accounts) in &sites {
        let _ = write!(
            body,
            "<label class=\"site\" data-accounts=\"{}\"><input type=\"checkbox\" name=\"site\" \
value=\"{}\" checked> {} <span class=\"hint\">({}.atlassian.net)</span><br></label>",
            escape(&accounts.join(" ")),
            escape(cloud_id),
            escape(name),
            escape(name)
        );
    }
    body.push_str("</fieldset>");

    body.push_str("<fieldset><legend>Requested permissions</legend><ul id=\"scopes\">");
    for scope in &request.scopes {
        let _ = write!(body, "<li><code>{}</code></li>", escape(scope));
    }
    body.push_str("</ul></fieldset>");

    if !users.is_empty() {
        body.push_str("<button type=\"submit\" name=\"decision\" value=\"accept\">Accept</button>");
    }
    body.push_str("<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>");
    body.push_str(
        "<script>(function(){var s=document.getElementById('account_id');if(!s)return;\
function f(){var a=s.value;document.querySelectorAll('label.site').forEach(function(l){\
var ok=l.dataset.accounts.split(' ').indexOf(a)>=0;l.style.display=ok?'':'none';\
l.querySelector('input').disabled=!ok;});}s.addEventListener('change',f);f();})();</script>",
    );
    page("Authorize app", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn consent_page_escapes_user_supplied_text() {
        let request = AuthorizeRequest {
            client_id: "<script>".into(),
            redirect_uri: "https://x/cb".into(),
            scopes: vec!["read:me\"><b>".into()],
            state: None,
            code_challenge: None,
        };
        let users = vec![ConsentChoice {
            account_id: "712020:a\"b".into(),
            name: "<Mia>".into(),
            email: "m@x".into(),
            sites: vec![("id-1".into(), "acme<".into())],
        }];
        let html = consent_page("req\"1", &request, &users);
        assert!(html.contains("<code>&lt;script&gt;</code>"));
        assert!(!html.contains("<Mia>"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("value=\"req&quot;1\""));
        assert!(html.contains("&lt;Mia&gt;"));
    }
}
