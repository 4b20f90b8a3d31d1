//! Following redirects, by the probe itself rather than by reqwest, so that every hop passes
//! the target guard before it is connected to and so that a monitor's custom headers (an
//! `X-Api-Key`, a bearer token) never reach a host other than the one they were written for.
//! Methods and bodies change as reqwest changed them: a 303 makes anything but HEAD a GET
//! without body, a 301 or 302 does that to a POST only, a 307 or 308 keeps both.

use reqwest::header::HeaderValue;
use reqwest::{Method, Url};

/// Most redirects one check follows.
pub const REDIRECT_LIMIT: usize = 10;

/// What to do with a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// It is the check's response.
    Final,
    /// Request `url` with `method`; without the body when `keep_body` is false.
    Follow {
        url: Url,
        method: Method,
        keep_body: bool,
    },
    /// The redirect cannot be followed (the check's error, kind `redirect`).
    Fail(String),
}

/// The next step after a response with `status` to `method current`, when `followed`
/// redirects were followed before it. A loop ends at the limit, like any long chain.
pub fn next(
    current: &Url,
    method: &Method,
    status: u16,
    location: Option<&HeaderValue>,
    followed: usize,
) -> Next {
    let becomes_get = match status {
        303 => *method != Method::HEAD,
        301 | 302 => *method == Method::POST,
        307 | 308 => false,
        _ => return Next::Final,
    };
    // No usable Location: the redirect response is the answer (as reqwest does).
    let Some(url) = location
        .and_then(|value| std::str::from_utf8(value.as_bytes()).ok())
        .and_then(|text| current.join(text).ok())
    else {
        return Next::Final;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Next::Fail(format!(
            "redirect to the unsupported scheme {:?}",
            url.scheme()
        ));
    }
    if followed >= REDIRECT_LIMIT {
        return Next::Fail(format!("more than {REDIRECT_LIMIT} redirects"));
    }
    let (method, keep_body) = if becomes_get {
        (Method::GET, false)
    } else {
        (method.clone(), true)
    };
    Next::Follow {
        url,
        method,
        keep_body,
    }
}

/// Are `a` and `b` the same host (scheme, name or address, and port)? A monitor's own
/// headers go only to its own host, and not in clear text when they were meant for TLS.
pub fn same_host(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// May the monitor's header `name` be sent to another host after a redirect?
pub fn crosses_hosts(name: &str) -> bool {
    name.eq_ignore_ascii_case("user-agent") || name.eq_ignore_ascii_case("accept")
}

/// Does header `name` describe the request body (dropped with the body)?
pub fn describes_body(name: &str) -> bool {
    [
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
    ]
    .iter()
    .any(|body_header| name.eq_ignore_ascii_case(body_header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn follow(from: &str, method: Method, status: u16, location: &str) -> Next {
        let location = HeaderValue::from_bytes(location.as_bytes()).unwrap();
        next(&url(from), &method, status, Some(&location), 0)
    }

    fn to(target: &str, method: Method, keep_body: bool) -> Next {
        Next::Follow {
            url: url(target),
            method,
            keep_body,
        }
    }

    #[test]
    fn relative_locations_resolve_and_methods_change_as_reqwest_did() {
        assert_eq!(
            follow("http://127.0.0.1:8080/a/b", Method::POST, 302, "../c?x=1"),
            to("http://127.0.0.1:8080/c?x=1", Method::GET, false)
        );
        assert_eq!(
            follow("http://127.0.0.1/", Method::POST, 307, "/again"),
            to("http://127.0.0.1/again", Method::POST, true)
        );
        assert_eq!(
            follow("http://127.0.0.1/", Method::HEAD, 303, "/other"),
            to("http://127.0.0.1/other", Method::HEAD, true)
        );
        assert_eq!(
            follow("http://127.0.0.1/", Method::DELETE, 303, "/done"),
            to("http://127.0.0.1/done", Method::GET, false)
        );
        // A PUT behind a 301 (http to https) stays a PUT with its body.
        assert_eq!(
            follow(
                "http://127.0.0.1/x",
                Method::PUT,
                301,
                "https://127.0.0.1/x"
            ),
            to("https://127.0.0.1/x", Method::PUT, true)
        );
        // Post/redirect/get to the same URL is not a loop.
        assert_eq!(
            follow("http://127.0.0.1/form", Method::POST, 303, "/form"),
            to("http://127.0.0.1/form", Method::GET, false)
        );
        // A Location in UTF-8 rather than ASCII is followed.
        assert_eq!(
            follow("http://127.0.0.1/", Method::GET, 302, "/caf\u{e9}"),
            to("http://127.0.0.1/caf%C3%A9", Method::GET, true)
        );
        for status in [200, 300, 304, 404] {
            assert_eq!(
                follow("http://127.0.0.1/", Method::GET, status, "/x"),
                Next::Final
            );
        }
        // A redirect without a usable Location is the answer.
        assert_eq!(
            next(&url("http://127.0.0.1/"), &Method::GET, 302, None, 0),
            Next::Final
        );
    }

    #[test]
    fn the_limit_and_other_schemes_fail() {
        assert!(matches!(
            follow("http://127.0.0.1/", Method::GET, 301, "file:///etc/passwd"),
            Next::Fail(_)
        ));
        let location = HeaderValue::from_static("/next");
        let last = url("http://127.0.0.1/last");
        assert!(matches!(
            next(&last, &Method::GET, 302, Some(&location), REDIRECT_LIMIT),
            Next::Fail(m) if m.contains("more than 10")
        ));
        assert!(matches!(
            next(
                &last,
                &Method::GET,
                302,
                Some(&location),
                REDIRECT_LIMIT - 1
            ),
            Next::Follow { .. }
        ));
    }

    #[test]
    fn only_user_agent_and_accept_cross_to_another_host() {
        let same = |a: &str, b: &str| same_host(&url(a), &url(b));
        assert!(same("http://127.0.0.1/a", "http://127.0.0.1:80/b"));
        assert!(!same("http://127.0.0.1/a", "http://127.0.0.2/a"));
        assert!(!same("http://127.0.0.1:8080/", "http://127.0.0.1:8081/"));
        assert!(!same("http://localhost/", "http://127.0.0.1/"));
        // From TLS to clear text on the same host and port: not the same.
        assert!(!same("https://127.0.0.1:8443/", "http://127.0.0.1:8443/"));
        assert!(crosses_hosts("User-Agent") && crosses_hosts("accept"));
        for name in ["X-Api-Key", "Authorization", "Cookie", "Accept-Language"] {
            assert!(!crosses_hosts(name), "{name}");
        }
        assert!(describes_body("Content-Type") && !describes_body("Accept"));
    }
}
