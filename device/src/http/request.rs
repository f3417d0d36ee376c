//! Reading and judging a request head: one absolute deadline for all of it, a size
//! cap, the parse, the `Host` check against DNS rebinding and the bearer token.

use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};
use std::time::Instant;

/// The most a request head may take.
pub const MAX_HEAD: usize = 8192;

/// A parsed request head: what the server looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without query or fragment.
    pub path: String,
    /// What followed `?`, if anything.
    pub query: String,
    pub host: Option<String>,
    pub authorization: Option<String>,
}

/// Why no request came.
#[derive(Debug)]
pub enum HeadError {
    /// Not HTTP, or a head the server will not take (400).
    Malformed(&'static str),
    /// Longer than [`MAX_HEAD`] (431).
    TooLarge,
    /// A request line alone longer than [`MAX_HEAD`] (414).
    UriTooLong,
    /// The deadline passed before the head was complete (408).
    TimedOut,
    /// The client closed or the socket failed: nothing to answer.
    Gone,
}

/// Read a request head from `stream`, all of it before `deadline`.
pub fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Request, HeadError> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&head) {
            if end > MAX_HEAD {
                return Err(too_large(&head));
            }
            return parse_head(&head[..end]).map_err(HeadError::Malformed);
        }
        if head.len() > MAX_HEAD {
            return Err(too_large(&head));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| HeadError::Gone)?;
        match stream.read(&mut buf) {
            Ok(0) => return Err(HeadError::Gone),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Gone),
        }
    }
}

/// An oversized head: 414 when its request line alone is too long, else 431.
fn too_large(head: &[u8]) -> HeadError {
    if head[..head.len().min(MAX_HEAD)].contains(&b'\n') {
        HeadError::TooLarge
    } else {
        HeadError::UriTooLong
    }
}

/// Where the head ends (the blank line, CRLF or bare LF in any mix), if it has.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    let mixed = bytes.windows(3).position(|w| w == b"\n\r\n");
    [crlf, lf, mixed].into_iter().flatten().min()
}

/// A URI scheme: a letter, then letters, digits, `+`, `-` or `.` (RFC 3986 §3.1).
fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Parse a request head (request line and header lines, without the blank line).
pub fn parse_head(head: &[u8]) -> Result<Request, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the head is not UTF-8")?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not METHOD TARGET HTTP/1.x");
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err("bad method");
    }
    // HTTP/1.x, a later minor version answered as 1.1 (RFC 9110 §2.5).
    if !version
        .strip_prefix("HTTP/1.")
        .is_some_and(|minor| minor.len() == 1 && minor.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("only HTTP/1.x");
    }
    // Origin form (/path?query) or absolute form (http://host/path?query); a `://`
    // further on (in a query's URL) is not a scheme.
    let target: std::borrow::Cow<str> = match target.split_once("://") {
        Some((scheme, rest)) if !target.starts_with('/') && is_scheme(scheme) => {
            // The authority ends at the path, the query or the fragment.
            match rest.find(['/', '?', '#']) {
                Some(i) if rest[i..].starts_with('/') => rest[i..].into(),
                Some(i) => format!("/{}", &rest[i..]).into(),
                None => "/".into(),
            }
        }
        _ => target.into(),
    };
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err("bad request target");
    }
    let target = target.split('#').next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        host: None,
        authorization: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err("a header line without a colon");
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err("bad header name");
        }
        let value = value.trim_matches([' ', '\t']);
        let slot = if name.eq_ignore_ascii_case("host") {
            &mut request.host
        } else if name.eq_ignore_ascii_case("authorization") {
            &mut request.authorization
        } else {
            continue;
        };
        // Two of either is how requests are smuggled past a proxy: refuse.
        if slot.replace(value.to_string()).is_some() {
            return Err("a repeated Host or Authorization header");
        }
    }
    Ok(request)
}

/// RFC 9110 token characters (methods and header names).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a `Host` header names this machine in a way a DNS-rebinding page cannot:
/// an IP address, `localhost`, this machine's host name (also as `NAME.local`), or a
/// name in `allowed` (`*` allows any).
pub fn host_allowed(host: &str, allowed: &[String], own_name: Option<&str>) -> bool {
    if allowed.iter().any(|a| a == "*") {
        return true;
    }
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<Ipv6Addr>().is_ok())
        }
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.parse::<Ipv4Addr>().is_ok() || name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let ours = own_name.map(str::to_ascii_lowercase);
    ours.is_some_and(|o| name == o || name == format!("{o}.local"))
        || allowed
            .iter()
            .any(|a| a.strip_suffix('.').unwrap_or(a).eq_ignore_ascii_case(&name))
}

/// This machine's host name (Linux), for [`host_allowed`].
pub fn own_host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Whether the request carries `token`: `Authorization: Bearer TOKEN`, or `token=TOKEN`
/// in the query (what a browser's `<img src>` can send).
pub fn has_token(request: &Request, token: &str) -> bool {
    let bearer = request
        .authorization
        .as_deref()
        .and_then(|a| a.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let query = request
        .query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(percent_decode);
    let token = token.as_bytes();
    bearer.is_some_and(|given| same_secret(given.as_bytes(), token))
        || query.is_some_and(|given| same_secret(&given, token))
}

/// `%XX` escapes of a query value decoded (`+` too, as forms send spaces).
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Compare without an early exit, so the time taken does not tell how much matched.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, &'static str> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn request_lines_and_headers() {
        let r = parse("GET /stats.json?x=1#top HTTP/1.1\r\nHost: cam.local:8080\r\nAuthorization: Bearer abc\r\nX-Other: y").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/stats.json");
        assert_eq!(r.query, "x=1");
        assert_eq!(r.host.as_deref(), Some("cam.local:8080"));
        assert_eq!(r.authorization.as_deref(), Some("Bearer abc"));
        let r = parse("HEAD http://10.0.0.2:8080/healthz HTTP/1.0").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("HEAD", "/healthz"));
        assert_eq!(
            parse("GET / HTTP/1.1\nhost:  a  ").unwrap().host.as_deref(),
            Some("a")
        );
        let r = parse("GET http://h?next=/x HTTP/1.2").unwrap();
        assert_eq!((r.path.as_str(), r.query.as_str()), ("/", "next=/x"));
        // A URL inside the query is not the absolute form: path and query stay.
        let r = parse("GET /stats.json?token=t&next=http://a/b HTTP/1.1").unwrap();
        assert_eq!(r.path, "/stats.json");
        assert_eq!(r.query, "token=t&next=http://a/b");

        for bad in [
            "",
            "GET",
            "GET  / HTTP/1.1",
            "GET / HTTP/2.0",
            "GET /",
            "GET / HTTP/1.1garbage",
            "GET / HTTP/1.",
            "GET / HTTP/1.10",
            "GET 1http://a/b HTTP/1.1",
            "GET / HTTP/1.1 extra",
            "G(T / HTTP/1.1",
            "GET nopath HTTP/1.1",
            "GET / HTTP/1.1\r\nno colon here",
            "GET / HTTP/1.1\r\nHost: a\r\nhost: b",
            "GET / HTTP/1.1\r\nBad Name: x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_head(b"GET /\xff HTTP/1.1").is_err());
    }

    #[test]
    fn hosts_that_a_rebinding_page_cannot_send_are_allowed() {
        let allowed = vec!["cam.example.org".to_string()];
        let ok = |h: &str| host_allowed(h, &allowed, Some("Board7"));
        for good in [
            "127.0.0.1:8080",
            "192.168.1.20",
            "[::1]:8080",
            "[fe80::1]",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost",
            "board7",
            "board7.local:8080",
            "board7.",
            "cam.example.org:80",
        ] {
            assert!(ok(good), "{good} refused");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:8080",
            "board7.evil.com",
            "127.0.0.1.evil.com",
            "[not-an-ip]",
            "",
        ] {
            assert!(!ok(bad), "{bad} allowed");
        }
        assert!(host_allowed("anything", &["*".to_string()], None));
        assert!(
            !host_allowed("board7", &[], None),
            "no name known: IPs only"
        );
    }

    #[test]
    fn tokens_by_header_or_query() {
        let with = |auth: Option<&str>, query: &str| Request {
            method: "GET".into(),
            path: "/".into(),
            query: query.into(),
            host: None,
            authorization: auth.map(str::to_string),
        };
        assert!(has_token(&with(Some("Bearer s3cret"), ""), "s3cret"));
        assert!(has_token(&with(Some("bearer  s3cret"), ""), "s3cret"));
        assert!(has_token(&with(None, "a=1&token=s3cret"), "s3cret"));
        assert!(!has_token(&with(None, ""), "s3cret"));
        assert!(!has_token(&with(Some("Bearer s3cre"), ""), "s3cret"));
        assert!(!has_token(&with(Some("Bearer s3crett"), ""), "s3cret"));
        assert!(!has_token(&with(Some("Basic s3cret"), ""), "s3cret"));
        assert!(!has_token(&with(None, "token="), "s3cret"));
        assert!(has_token(&with(None, "token=a%2Bb%3D"), "a+b="));
        assert!(
            !has_token(&with(None, "token=a+b%3D"), "a+b="),
            "+ is a space"
        );
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
        assert!(same_secret(b"", b""));
        assert!(!same_secret(b"", b"x"));
    }
}
