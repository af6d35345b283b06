//! The sign-in's HTML pages (plain forms, every value escaped) and their stylesheet, served as a
//! file so that the content security policy needs no inline style. The password page also offers
//! a passkey, through the web app's script `signin-passkey.js` (a file of this origin: no inline
//! script either).

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::auth::login::login_message;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · bp</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/oauth2/login.css\"></head>\
         <body><main><h1>{}</h1>{body}</main></body></html>\n",
        escape(title),
        escape(title)
    )
}

fn alert(error: Option<&str>) -> String {
    error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default()
}

/// The first page of a sign-in; `username` fills its field again (what the customer typed, after
/// a failed attempt).
pub(super) fn password_page(client_name: &str, tx: &str, username: Option<&str>, error: Option<&str>) -> String {
    page(
        "Sign in",
        &format!(
            "<p>to continue to <strong>{}</strong></p>{}\
             <form method=\"post\" action=\"/oauth2/login/password\">\
             <input type=\"hidden\" name=\"tx\" value=\"{}\">\
             <label for=\"username\">Username</label>\
             <input id=\"username\" name=\"username\" autocomplete=\"username\" value=\"{}\" required autofocus>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Continue</button></form>\
             <div class=\"passkey\"><p class=\"or\">or, without your password</p>\
             <button type=\"button\" id=\"passkey-button\" class=\"secondary\" hidden>Sign in with a passkey</button>\
             <p id=\"passkey-status\" role=\"status\"></p>\
             <form id=\"passkey-form\" method=\"post\" action=\"/oauth2/login/passkey\">\
             <input type=\"hidden\" name=\"tx\" value=\"{}\"><input type=\"hidden\" name=\"credential\"></form></div>\
             <script type=\"module\" src=\"/app/js/signin-passkey.js\"></script>",
            escape(client_name),
            alert(error),
            escape(tx),
            escape(username.unwrap_or_default()),
            escape(tx)
        ),
    )
}

pub(super) fn second_factor_page(client_name: &str, tx: &str, device_nonce: &str, error: Option<&str>) -> String {
    // The same page for every customer (and for a sign-in whose password was wrong): what it
    // offers must not tell whether the password was right, nor which factors the customer has.
    let totp = format!(
        "<form method=\"post\" action=\"/oauth2/login/second-factor\">\
         <input type=\"hidden\" name=\"tx\" value=\"{}\">\
         <label for=\"code\">Code from your authenticator app</label>\
         <input id=\"code\" name=\"code\" inputmode=\"numeric\" pattern=\"[0-9]{{6}}\" maxlength=\"6\" autocomplete=\"one-time-code\" required autofocus>\
         <button type=\"submit\">Sign in</button></form>",
        escape(tx)
    );
    page(
        "Confirm it is you",
        &format!(
            "<p>to continue to <strong>{}</strong></p>{}{totp}\
             <details><summary>Use a registered device key instead</summary>\
             <p>Sign this text with the device key and paste the signature:</p>\
             <pre id=\"device-message\">{}</pre>\
             <form method=\"post\" action=\"/oauth2/login/second-factor\">\
             <input type=\"hidden\" name=\"tx\" value=\"{}\">\
             <label for=\"device_id\">Device id</label><input id=\"device_id\" name=\"device_id\" required>\
             <label for=\"signature\">Signature (base64url)</label><input id=\"signature\" name=\"signature\" required>\
             <button type=\"submit\">Sign in with the device</button></form></details>",
            escape(client_name),
            alert(error),
            escape(&login_message(tx, device_nonce)),
            escape(tx)
        ),
    )
}

pub(super) fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    (status, Html(page(title, &format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message))))).into_response()
}

/// The login pages' stylesheet (a file, so the CSP needs no inline styles).
pub async fn login_css() -> Response {
    const CSS: &str = "body{font-family:system-ui,sans-serif;background:#f4f6f8;color:#1b1f24;margin:0}\
main{max-width:24rem;margin:3rem auto;background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002}\
h1{font-size:1.4rem;margin-top:0}label{display:block;margin:1rem 0 .25rem;font-weight:600}\
input{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #6b7280;border-radius:4px;font-size:1rem}\
button{margin-top:1.25rem;width:100%;padding:.7rem;border:0;border-radius:4px;background:#0b5cad;color:#fff;font-size:1rem}\
:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}.error{color:#a4161a;font-weight:600}\
pre{white-space:pre-wrap;background:#eef1f4;padding:.5rem;font-size:.8rem}details{margin-top:1.5rem}\
.passkey{margin-top:1.5rem;border-top:1px solid #d1d5db}.or{text-align:center;color:#4b5563;margin:.75rem 0 0}\
button.secondary{background:#fff;color:#0b5cad;border:1px solid #0b5cad}[hidden]{display:none}\
#passkey-status:empty{display:none}#passkey-status{color:#1b1f24;font-weight:600}";
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], CSS)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert!(!password_page("<script>", "tx\"", Some("<b>\""), None).contains("<script>"));
        assert!(password_page("bank", "tx", Some("<b>\""), None).contains("value=\"&lt;b&gt;&quot;\""));
    }
}
