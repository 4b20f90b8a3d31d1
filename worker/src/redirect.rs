//! Following redirects, by the probe itself rather than by reqwest, so that every hop passes
//! the target guard before it is connected to and so that a monitor's custom headers (an
//! `X-Api-Key`, a bearer token) never reach a host other than the one they were written for.
//! Methods and bodies change as browsers and reqwest change them.

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

/// The next step after a response with `status` to `method current`. `visited` holds the
/// URLs already requested before `current`.
pub fn next(
    current: &Url,
    method: &Method,
    status: u16,
    location: Option<&HeaderValue>,
    visited: &[Url],
) -> Next {
    let keeps_method = match status {
        301..=303 => false,
        307 | 308 => true,
        _ => return Next::Final,
    };
    // No usable Location: the redirect response is the answer (as reqwest does).
    let Some(url) = location
        .and_then(|value| value.to_str().ok())
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
    if visited.len() >= REDIRECT_LIMIT {
        return Next::Fail(format!("more than {REDIRECT_LIMIT} redirects"));
    }
    if url == *current || visited.contains(&url) {
        return Next::Fail("redirect loop".to_string());
    }
    let (method, keep_body) = if keeps_method || *method == Method::GET || *method == Method::HEAD {
        (method.clone(), keeps_method)
    } else {
        (Method::GET, false)
    };
    Next::Follow {
        url,
        method,
        keep_body,
    }
}

/// Are `a` and `b` the same host (name or address, and port)? A monitor's own headers go
/// only to its own host.
pub fn same_host(a: &Url, b: &Url) -> bool {
    a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
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
        next(
            &url(from),
            &method,
            status,
            Some(&HeaderValue::from_str(location).unwrap()),
            &[],
        )
    }

    #[test]
    fn relative_locations_resolve_and_methods_change_as_browsers_do() {
        assert_eq!(
            follow("http://127.0.0.1:8080/a/b", Method::POST, 302, "../c?x=1"),
            Next::Follow {
                url: url("http://127.0.0.1:8080/c?x=1"),
                method: Method::GET,
                keep_body: false
            }
        );
        assert_eq!(
            follow("http://127.0.0.1/", Method::POST, 307, "/again"),
            Next::Follow {
                url: url("http://127.0.0.1/again"),
                method: Method::POST,
                keep_body: true
            }
        );
        assert_eq!(
            follow("http://127.0.0.1/", Method::HEAD, 303, "/other"),
            Next::Follow {
                url: url("http://127.0.0.1/other"),
                method: Method::HEAD,
                keep_body: false
            }
        );
        for status in [200, 300, 304, 404] {
            assert_eq!(
                follow("http://127.0.0.1/", Method::GET, status, "/x"),
                Next::Final
            );
        }
        // A redirect without a usable Location is the answer.
        assert_eq!(
            next(&url("http://127.0.0.1/"), &Method::GET, 302, None, &[]),
            Next::Final
        );
    }

    #[test]
    fn loops_limits_and_other_schemes_fail() {
        assert!(matches!(
            follow("http://127.0.0.1/", Method::GET, 301, "file:///etc/passwd"),
            Next::Fail(_)
        ));
        assert!(matches!(
            follow("http://127.0.0.1/a", Method::GET, 301, "/a"),
            Next::Fail(m) if m == "redirect loop"
        ));
        let visited: Vec<Url> = (0..REDIRECT_LIMIT)
            .map(|i| url(&format!("http://127.0.0.1/{i}")))
            .collect();
        let location = HeaderValue::from_static("/next");
        assert!(matches!(
            next(&url("http://127.0.0.1/last"), &Method::GET, 302, Some(&location), &visited),
            Next::Fail(m) if m.contains("more than 10")
        ));
        assert!(matches!(
            next(
                &url("http://127.0.0.1/last"),
                &Method::GET,
                302,
                Some(&location),
                &visited[1..]
            ),
            Next::Follow { .. }
        ));
    }

    #[test]
    fn only_user_agent_and_accept_cross_to_another_host() {
        assert!(same_host(
            &url("http://127.0.0.1/a"),
            &url("http://127.0.0.1:80/b")
        ));
        assert!(!same_host(
            &url("http://127.0.0.1/a"),
            &url("http://127.0.0.2/a")
        ));
        assert!(!same_host(
            &url("http://127.0.0.1:8080/"),
            &url("http://127.0.0.1:8081/")
        ));
        assert!(!same_host(
            &url("http://localhost/"),
            &url("http://127.0.0.1/")
        ));
        assert!(crosses_hosts("User-Agent") && crosses_hosts("accept"));
        for name in ["X-Api-Key", "Authorization", "Cookie", "Accept-Language"] {
            assert!(!crosses_hosts(name), "{name}");
        }
        assert!(describes_body("Content-Type") && !describes_body("Accept"));
    }
}
