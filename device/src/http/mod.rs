//! The HTTP output: a live page, an MJPEG stream, snapshots, stats, health and metrics,
//! served with `std::net` and a thread per connection, within budgets that keep a
//! hostile or unlucky client from crowding out the rest (see [`limits`]).
//!
//! | path | answer |
//! |---|---|
//! | `/` | the page: stream, legend, stats refreshed from `/stats.json` every second |
//! | `/stream.mjpg` | `multipart/x-mixed-replace` JPEG frames |
//! | `/snapshot.jpg` | the latest frame (503 before the first) |
//! | `/stats.json` | [`Stats`] plus the client count |
//! | `/healthz` | JSON [`Health`]: 200 while frames move, else 503 with the reason |
//! | `/metrics` | Prometheus text format |
//!
//! What protects it: the request head must arrive whole within `head_timeout`; at
//! most `max_pending` sockets wait for theirs (the oldest is shut when another
//! comes, once past a short grace that lets a burst of clients in); stream viewers
//! and other pages have their own caps (503 beyond), while `/healthz` and
//! `/stats.json` are always answered; every response, and every
//! frame of a stream, must be taken within `write_timeout`; past `max_connections`
//! a socket is refused by the accept loop itself. A `Host` that is not an address,
//! `localhost` or this machine's name is refused (DNS rebinding), and with a token
//! set everything but `/healthz` needs it.

mod limits;
mod metrics;
mod published;
pub mod request;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use limits::{Budget, Pending, Waiting};
use request::{has_token, host_allowed, read_head, HeadError, Request};

pub use published::{Health, Published, Stats};

/// Where the server listens unless configured: this machine only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// The multipart boundary of the MJPEG stream, and the stream's content type.
const BOUNDARY: &str = "segcamframe";
const MJPEG_TYPE: &str = "multipart/x-mixed-replace; boundary=segcamframe";

/// The live page (self-contained: no external scripts or styles).
const INDEX_HTML: &str = include_str!("index.html");

/// Pauses of the accept loop while accepting fails (out of file descriptors).
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(1));

/// How often failing accepts are reported at most.
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// `/stats.json`: the pipeline's stats and what only the server knows.
#[derive(Serialize)]
struct StatsView<'a> {
    #[serde(flatten)]
    stats: &'a Stats,
    clients: usize,
    /// Milliseconds since the latest frame (null before the first).
    frame_age_ms: Option<u64>,
}

/// Server limits and access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// The whole request head must arrive within this.
    pub head_timeout: Duration,
    /// A response, or one frame of a stream, must be taken within this.
    pub write_timeout: Duration,
    /// Sockets waiting for their request head; the oldest is shut beyond this (after
    /// a short grace, up to four times this in a burst).
    pub max_pending: usize,
    /// `/stream.mjpg` viewers at once; more get 503.
    pub max_streams: usize,
    /// Other requests answered at once (the page, snapshots, metrics); more get 503.
    /// `/healthz` and `/stats.json` are not counted: they are always answered.
    pub max_busy: usize,
    /// Connections in all; beyond, the accept loop refuses them without a thread.
    pub max_connections: usize,
    /// `/healthz` fails when no frame came for this long (or three frame intervals).
    pub stale_after: Duration,
    /// Host names besides addresses, `localhost` and this machine's name that clients
    /// may use (`*`: any, which turns the DNS-rebinding check off).
    pub allowed_hosts: Vec<String>,
    /// When set, every path but `/healthz` needs `Authorization: Bearer TOKEN` or
    /// `?token=TOKEN`.
    pub token: Option<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            head_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_pending: 32,
            max_streams: 16,
            max_busy: 32,
            max_connections: 256,
            stale_after: Duration::from_secs(5),
            allowed_hosts: Vec::new(),
            token: None,
        }
    }
}

/// What every connection thread shares.
struct Shared {
    published: Arc<Published>,
    options: HttpOptions,
    stop: AtomicBool,
    connections: Arc<Budget>,
    pending: Arc<Pending>,
    streams: Arc<Budget>,
    busy: Arc<Budget>,
    own_name: Option<String>,
}

/// A running server; stops when dropped (stream threads end within half a second).
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listen on `addr` (`"127.0.0.1:8080"`; port 0 picks a free one).
    pub fn start(addr: &str, published: Arc<Published>) -> Result<Self> {
        Self::start_with(addr, published, HttpOptions::default())
    }

    pub fn start_with(addr: &str, published: Arc<Published>, options: HttpOptions) -> Result<Self> {
        let net = |source| Error::Net {
            addr: addr.to_string(),
            cause: source,
        };
        if options
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(Error::Invalid(format!("http {addr}: the token is empty")));
        }
        let listener = TcpListener::bind(addr).map_err(net)?;
        let local = listener.local_addr().map_err(net)?;
        if !local.ip().is_loopback() && options.token.is_none() {
            tracing::warn!(
                "http: {local} is reachable from the network without a token: anyone who \
                 reaches it can watch the stream (set http-token-file, or bind 127.0.0.1)"
            );
        }
        let shared = Arc::new(Shared {
            published,
            stop: AtomicBool::new(false),
            connections: Budget::new(options.max_connections),
            pending: Pending::new(options.max_pending),
            streams: Budget::new(options.max_streams),
            busy: Budget::new(options.max_busy),
            own_name: request::own_host_name(),
            options,
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("segcam-http".into())
                .spawn(move || accept_loop(listener, shared))
                .map_err(net)?
        };
        Ok(Self {
            addr: local,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting and end the stream threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.published.wake_all();
        // Wake the blocking accept() with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(handle) = self.acceptor.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.stop();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let (first_pause, max_pause) = ACCEPT_BACKOFF;
    let mut pause = first_pause;
    // Said at most once a minute (a crowd at the descriptor limit makes accept fail
    // and succeed by turns), and "again" once after each time it was said.
    let mut warned: Option<Instant> = None;
    let mut recovering = false;
    while !shared.stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // Out of descriptors (EMFILE) or memory: the connection stays queued and
                // accept fails again at once; pause rather than spin, and say so once.
                if warned.is_none_or(|t| t.elapsed() >= ACCEPT_WARNING_EVERY) {
                    tracing::warn!("http: cannot accept connections ({e}); retrying with pauses");
                    warned = Some(Instant::now());
                    recovering = true;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(max_pause);
                continue;
            }
        };
        if recovering {
            tracing::info!("http: accepting connections again");
            recovering = false;
        }
        pause = first_pause;
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Some(connection) = shared.connections.take() else {
            refuse(&stream);
            continue;
        };
        let Some(waiting) = shared.pending.enter(&stream) else {
            refuse(&stream);
            continue;
        };
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("segcam-http-client".into())
            .spawn(move || {
                let _connection = connection;
                let mut stream = stream;
                let unread = serve(&mut stream, &thread_shared, waiting).unwrap_or(false);
                if unread && !thread_shared.stop.load(Ordering::SeqCst) {
                    close_gently(&mut stream);
                }
            });
        if spawned.is_err() {
            tracing::warn!("http: cannot start a thread for a connection; refused it");
        }
    }
}

/// How long, and how much, a closing connection still reads of what its client sends.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 8 << 20;

/// Close so that a client still sending (a body, an oversized head) reads the answer
/// rather than a reset: Linux resets a socket closed with unread input. Stop writing,
/// then read and drop what still comes, briefly.
fn close_gently(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 8192];
    let mut left = LINGER_BYTES;
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Whether a client has closed its side (or its socket failed), without waiting.
fn hung_up(stream: &TcpStream) -> bool {
    match peek_now(stream) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

/// What a client has sent and the server not read, without waiting: `Ok(0)` when it
/// closed, `WouldBlock` when nothing is there.
fn peek_now(stream: &TcpStream) -> io::Result<usize> {
    stream.set_nonblocking(true)?;
    let peeked = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false)?;
    peeked
}

/// Turn a socket away without a thread: a short 503 if the socket takes it at once.
fn refuse(stream: &TcpStream) {
    let _ = stream.set_nonblocking(true);
    let _ = (&*stream).write(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
          Content-Length: 17\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many clients\n",
    );
}

/// Write all of `data` before `deadline`, however slowly the client reads.
fn write_by(stream: &mut TcpStream, data: &[u8], deadline: Instant) -> io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A complete (non-streaming) response.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    extra: &'static str,
}

impl Response {
    fn new(status: &'static str, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            extra: "",
        }
    }

    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body.into())
    }

    fn json(status: &'static str, value: &impl Serialize) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        Self::new(status, "application/json", body)
    }

    fn with(mut self, extra: &'static str) -> Self {
        self.extra = extra;
        self
    }

    fn send(&self, stream: &mut TcpStream, head_only: bool, timeout: Duration) -> io::Result<()> {
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
             Connection: close\r\n{}\r\n",
            self.status,
            self.content_type,
            self.body.len(),
            self.extra
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        write_by(stream, &out, Instant::now() + timeout)
    }
}

/// Answer one request; `Ok(true)` when the client may still be sending (a refused head,
/// a method with a body), so that the connection is closed gently.
fn serve(stream: &mut TcpStream, shared: &Shared, waiting: Waiting) -> io::Result<bool> {
    let _ = stream.set_nodelay(true);
    let timeout = shared.options.write_timeout;
    let head = read_head(stream, Instant::now() + shared.options.head_timeout);
    drop(waiting);
    let refused = match head {
        Ok(request) => Ok(request),
        Err(HeadError::Gone) => return Ok(false),
        Err(HeadError::TimedOut) => Err(Response::text(
            "408 Request Timeout",
            "the request head took too long\n",
        )),
        Err(HeadError::UriTooLong) => Err(Response::text(
            "414 URI Too Long",
            "request line too long\n",
        )),
        Err(HeadError::TooLarge) => Err(Response::text(
            "431 Request Header Fields Too Large",
            "request head too large\n",
        )),
        Err(HeadError::Malformed(why)) => Err(Response::text(
            "400 Bad Request",
            format!("bad request: {why}\n"),
        )),
    };
    // A refused head may be followed by more the client is still sending.
    let request = match refused {
        Ok(request) => request,
        Err(response) => return response.send(stream, false, timeout).map(|()| true),
    };
    if shared.stop.load(Ordering::SeqCst) {
        return Ok(false);
    }
    let head_only = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Response::text("405 Method Not Allowed", "only GET and HEAD\n")
                .with("Allow: GET, HEAD\r\n")
                .send(stream, false, timeout)
                .map(|()| true)
        }
    };
    if let Some(refusal) = refusal(&request, shared) {
        return refusal.send(stream, head_only, timeout).map(|()| false);
    }
    let published = &shared.published;
    let response = match request.path.as_str() {
        "/healthz" => {
            let health = published.health(shared.options.stale_after);
            let status = if health.is_ok() {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            Response::json(status, &health)
        }
        "/stats.json" => {
            let latest = published.lock();
            let view = StatsView {
                stats: &latest.stats,
                clients: published.clients(),
                frame_age_ms: latest.last_frame.map(|t| t.elapsed().as_millis() as u64),
            };
            let body = serde_json::to_vec(&view).unwrap_or_default();
            drop(latest);
            Response::new("200 OK", "application/json", body)
        }
        "/stream.mjpg" => {
            let Some(_viewer) = shared.streams.take() else {
                return Response::text("503 Service Unavailable", "too many stream clients\n")
                    .with("Retry-After: 5\r\n")
                    .send(stream, head_only, timeout)
                    .map(|()| false);
            };
            if head_only {
                Response::new("200 OK", MJPEG_TYPE, Vec::new())
            } else {
                return stream_mjpeg(stream, shared).map(|()| false);
            }
        }
        path => {
            let Some(_busy) = shared.busy.take() else {
                return Response::text("503 Service Unavailable", "too many clients\n")
                    .with("Retry-After: 1\r\n")
                    .send(stream, head_only, timeout)
                    .map(|()| false);
            };
            let response = match path {
                "/" | "/index.html" => {
                    Response::new("200 OK", "text/html; charset=utf-8", INDEX_HTML)
                }
                "/snapshot.jpg" => match published.latest() {
                    Some((_, jpeg)) => Response::new("200 OK", "image/jpeg", jpeg.as_slice()),
                    None => Response::text("503 Service Unavailable", "no frame yet\n"),
                },
                "/metrics" => Response::new(
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics::metrics_text(&published.stats(), published.clients()),
                ),
                _ => Response::text("404 Not Found", "not found\n"),
            };
            return response.send(stream, head_only, timeout).map(|()| false);
        }
    };
    response.send(stream, head_only, timeout).map(|()| false)
}

/// A request the server will not answer: a foreign `Host`, or no token where one is set.
fn refusal(request: &Request, shared: &Shared) -> Option<Response> {
    let options = &shared.options;
    if let Some(host) = &request.host {
        if !host_allowed(host, &options.allowed_hosts, shared.own_name.as_deref()) {
            return Some(Response::text(
                "403 Forbidden",
                "this Host is not allowed (add it to http-allowed-hosts)\n",
            ));
        }
    }
    match &options.token {
        Some(token) if request.path != "/healthz" && !has_token(request, token) => Some(
            Response::text(
                "401 Unauthorized",
                "a token is needed (Authorization: Bearer, or ?token=)\n",
            )
            .with("WWW-Authenticate: Bearer realm=\"segcam\"\r\n"),
        ),
        _ => None,
    }
}

/// Stream frames until the client goes away, takes longer than the write timeout
/// for one frame, or the server stops.
fn stream_mjpeg(stream: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    let published = &shared.published;
    published.clients.fetch_add(1, Ordering::SeqCst);
    struct Leave<'a>(&'a Published);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.clients.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _leave = Leave(published);
    let timeout = shared.options.write_timeout;

    // Each part is closed by the next boundary right away, so browsers show a frame
    // as soon as it arrives rather than when the following one starts.
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {MJPEG_TYPE}\r\nCache-Control: no-store\r\n\
         Pragma: no-cache\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n\
         --{BOUNDARY}\r\n"
    );
    write_by(stream, head.as_bytes(), Instant::now() + timeout)?;
    let mut seen = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some((seq, jpeg)) = published.wait_newer(seen, Duration::from_millis(500)) else {
            // No frame to write: notice a viewer that left, or its slot stays taken.
            if hung_up(stream) {
                return Ok(());
            }
            continue;
        };
        seen = seq;
        let part = format!(
            "Content-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        );
        let deadline = Instant::now() + timeout;
        write_by(stream, part.as_bytes(), deadline)?;
        write_by(stream, &jpeg, deadline)?;
        write_by(stream, format!("\r\n--{BOUNDARY}\r\n").as_bytes(), deadline)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::PresentClass;
    use std::io::{BufRead, BufReader, Read};

    const DEADLINE: Duration = Duration::from_secs(10);

    fn server(options: HttpOptions) -> (HttpServer, Arc<Published>) {
        let published = Arc::new(Published::new());
        let server = HttpServer::start_with("127.0.0.1:0", published.clone(), options).unwrap();
        (server, published)
    }

    fn connect(server: &HttpServer, path: &str) -> TcpStream {
        let mut s = TcpStream::connect_timeout(&server.local_addr(), DEADLINE).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_write_timeout(Some(DEADLINE)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        s
    }

    /// Status code, headers (lower-case names) and body of a complete response.
    fn get(server: &HttpServer, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut raw = Vec::new();
        connect(server, path).read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        (status, headers, raw[split + 4..].to_vec())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// A frame of the test scene as a JPEG (image's encoder: the server only forwards bytes).
    fn frame_jpeg(t: f64) -> Vec<u8> {
        let scene = crate::scene::render_frame(3, t, 64, 48);
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&scene.image)
            .unwrap();
        out
    }

    fn stats(frames: u64) -> Stats {
        Stats {
            frames,
            fps: 25.0,
            inference_ms: 12.5,
            dropped_frames: 2,
            corrupt_frames: 3,
            model: "test-model".into(),
            width: 64,
            height: 48,
            classes_present: vec![PresentClass {
                index: 4,
                name: "person".into(),
                colour: [192, 128, 128],
                pixels: 10,
                fraction: 0.25,
            }],
            ..Stats::default()
        }
    }

    /// Read one multipart part's body from a stream positioned after a boundary line.
    fn read_part(reader: &mut BufReader<TcpStream>) -> Vec<u8> {
        let mut length = None;
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
            let line = line.trim_end();
            if line.is_empty() && length.is_some() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                length = Some(v.parse::<usize>().unwrap());
            }
        }
        let mut body = vec![0; length.unwrap()];
        reader.read_exact(&mut body).unwrap();
        let mut tail = String::new();
        reader.read_line(&mut tail).unwrap(); // CRLF after the body
        tail.clear();
        reader.read_line(&mut tail).unwrap();
        assert_eq!(tail.trim_end(), format!("--{BOUNDARY}"));
        body
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn endpoints_answer_with_their_content_types() {
        let (server, published) = server(HttpOptions::default());
        let (status, headers, body) = get(&server, "/");
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
        let page = String::from_utf8(body).unwrap();
        assert!(page.contains(r#"<img id="stream" src="/stream.mjpg""#));
        assert!(page.contains("/stats.json"));

        // Before the first frame: no snapshot, not healthy, and /healthz says why.
        assert_eq!(get(&server, "/snapshot.jpg").0, 503);
        let (status, headers, body) = get(&server, "/healthz");
        assert_eq!(
            (status, header(&headers, "content-type")),
            (503, "application/json")
        );
        let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(health["status"], "unhealthy");
        assert_eq!(health["reason"], "no frame yet");

        let jpeg = frame_jpeg(0.0);
        published.publish(jpeg.clone(), stats(1));
        let (status, headers, body) = get(&server, "/snapshot.jpg");
        assert_eq!(
            (status, header(&headers, "content-type")),
            (200, "image/jpeg")
        );
        assert_eq!(body, jpeg);
        assert_eq!(header(&headers, "content-length"), jpeg.len().to_string());

        let (status, headers, body) = get(&server, "/stats.json");
        assert_eq!(
            (status, header(&headers, "content-type")),
            (200, "application/json")
        );
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["frames"], 1);
        assert_eq!(json["model"], "test-model");
        assert_eq!(json["dropped_frames"], 2);
        assert_eq!(json["no_signal"], false);
        assert_eq!(json["clients"], 0);
        assert_eq!(json["classes_present"][0]["name"], "person");
        assert!(json["frame_age_ms"].as_u64().unwrap() < 10_000);

        let (status, _, body) = get(&server, "/healthz");
        assert_eq!(status, 200);
        let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["frames"], 1);
        assert!(health.get("reason").is_none(), "{health}");

        let (status, headers, _) = get(&server, "/metrics");
        assert_eq!(status, 200);
        assert!(header(&headers, "content-type").starts_with("text/plain; version=0.0.4"));

        let s = connect(&server, "/stream.mjpg");
        let mut first = String::new();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        reader.read_line(&mut first).unwrap();
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim_end(),
            "Content-Type: multipart/x-mixed-replace; boundary=segcamframe"
        );
        s.shutdown(std::net::Shutdown::Both).unwrap();

        assert_eq!(get(&server, "/nothing-here").0, 404);
        let mut post = TcpStream::connect(server.local_addr()).unwrap();
        post.set_read_timeout(Some(DEADLINE)).unwrap();
        post.write_all(b"POST / HTTP/1.1\r\n\r\n").unwrap();
        let mut raw = String::new();
        post.read_to_string(&mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 405"), "{raw}");
        assert_eq!(
            get(&server, "/stats.json?cache=1").0,
            200,
            "queries are ignored"
        );
    }

    #[test]
    fn healthz_follows_frames_not_pictures() {
        // Wide margins: a loaded 2-core machine may take a while for one request.
        let options = HttpOptions {
            stale_after: Duration::from_secs(2),
            ..HttpOptions::default()
        };
        let (server, published) = server(options);
        published.set_stats(stats(1));
        assert_eq!(get(&server, "/healthz").0, 200, "a frame without a picture");
        std::thread::sleep(Duration::from_secs(3));
        let (status, _, body) = get(&server, "/healthz");
        assert_eq!(status, 503, "stale");
        assert!(String::from_utf8_lossy(&body).contains("no frame for"));
        published.publish(frame_jpeg(0.0), stats(2));
        assert_eq!(get(&server, "/healthz").0, 200);
        published.publish(
            frame_jpeg(0.0),
            Stats {
                no_signal: true,
                problem: Some("/dev/video3: gone".into()),
                ..stats(2)
            },
        );
        let (status, _, body) = get(&server, "/healthz");
        assert_eq!(status, 503, "no signal");
        assert!(String::from_utf8_lossy(&body).contains("/dev/video3: gone"));
    }

    #[test]
    fn mjpeg_stream_delivers_frames_as_they_are_published() {
        let (server, published) = server(HttpOptions::default());
        let s = connect(&server, "/stream.mjpg");
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        while line.trim_end() != format!("--{BOUNDARY}") {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0);
        }
        wait_until("the stream client", || published.clients() == 1);

        let publisher = {
            let published = published.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    if published.clients() == 0 {
                        break;
                    }
                    published.publish(frame_jpeg(i as f64 * 0.5), stats(i + 1));
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let mut frames: Vec<Vec<u8>> = Vec::new();
        while frames.len() < 3 {
            let body = read_part(&mut reader);
            let decoded = image::load_from_memory(&body).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (64, 48));
            if frames.last() != Some(&body) {
                frames.push(body);
            }
        }
        drop(reader);
        wait_until("the client to leave", || published.clients() == 0);
        publisher.join().unwrap();
        let (_, _, body) = get(&server, "/metrics");
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("segcam_clients 0"));
    }

    #[test]
    fn a_client_that_never_reads_does_not_block_publishing() {
        let options = HttpOptions {
            write_timeout: Duration::from_millis(300),
            ..HttpOptions::default()
        };
        let (server, published) = server(options);
        let stalled = connect(&server, "/stream.mjpg"); // never read
        wait_until("the stalled client", || published.clients() == 1);

        // 200 frames of 256 KiB: far more than the socket buffers hold.
        let big = vec![0x5a; 256 * 1024];
        let start = Instant::now();
        for i in 0..200 {
            published.publish(big.clone(), stats(i));
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed < Duration::from_secs(2),
            "publishing took {elapsed:?}"
        );

        // Other clients are still served meanwhile.
        assert_eq!(get(&server, "/healthz").0, 200);

        // The stalled client is dropped once its writes time out.
        let start = Instant::now();
        while published.clients() > 0 {
            assert!(
                start.elapsed() < DEADLINE,
                "the stalled client was never dropped"
            );
            published.publish(big.clone(), stats(0));
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(stalled);
    }

    #[test]
    fn metrics_parse_as_prometheus_text() {
        let (server, published) = server(HttpOptions::default());
        published.publish(frame_jpeg(0.0), stats(42));
        let (_, _, body) = get(&server, "/metrics");
        let text = String::from_utf8(body).unwrap();
        let mut typed = std::collections::HashMap::new();
        let mut values = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(matches!(kind, "counter" | "gauge"), "{line}");
                typed.insert(name.to_string(), kind.to_string());
            } else if line.starts_with("# HELP ") {
                continue;
            } else {
                let (name, value) = line.split_once(' ').expect(line);
                let valid = name.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                });
                assert!(valid, "bad metric name in {line}");
                assert!(
                    typed.contains_key(name),
                    "{name} has no TYPE line before it"
                );
                values.insert(name.to_string(), value.parse::<f64>().expect(line));
            }
        }
        assert_eq!(values["segcam_frames_total"], 42.0);
        assert_eq!(values["segcam_fps"], 25.0);
        assert!(text.contains("\nsegcam_fps 25\n"), "{text}");
        assert_eq!(values["segcam_inference_ms"], 12.5);
        assert_eq!(values["segcam_dropped_frames_total"], 2.0);
        assert_eq!(values["segcam_corrupt_frames_total"], 3.0);
        assert_eq!(values["segcam_clients"], 0.0);
        assert_eq!(typed["segcam_frames_total"], "counter");
    }

    #[test]
    fn shutdown_ends_streams_and_frees_the_port() {
        let (server, published) = server(HttpOptions::default());
        let addr = server.local_addr();
        let _s = connect(&server, "/stream.mjpg");
        wait_until("the stream client", || published.clients() == 1);
        server.shutdown();
        wait_until("the stream thread to end", || published.clients() == 0);
        assert!(TcpListener::bind(addr).is_ok(), "port still bound");
    }

    #[test]
    fn binding_a_bad_address_names_it() {
        let err = HttpServer::start("256.0.0.1:80", Arc::new(Published::new()))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("256.0.0.1:80"), "{err}");
    }

    /// Send `head` on a new connection and return the status code of the answer.
    fn status_of(addr: SocketAddr, head: &str) -> u16 {
        let mut s = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        text.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn a_client_still_sending_a_body_reads_the_answer_not_a_reset() {
        let (server, _published) = server(HttpOptions::default());
        let mut s = TcpStream::connect_timeout(&server.local_addr(), DEADLINE).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.set_write_timeout(Some(DEADLINE)).unwrap();
        let body = vec![b'x'; 2 << 20];
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        // More than the socket buffers hold: the server must read it to let it through.
        s.write_all(&body).expect("the body is taken, not reset");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .expect("the answer, then a clean close");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    }

    #[test]
    fn a_stream_viewer_that_left_frees_its_slot_without_new_frames() {
        let options = HttpOptions {
            max_streams: 1,
            ..HttpOptions::default()
        };
        let (server, published) = server(options);
        published.publish(frame_jpeg(0.0), stats(1));
        let first = connect(&server, "/stream.mjpg");
        let mut reader = BufReader::new(first);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("200"), "{line}");
        drop(reader);
        // no frame comes after the viewer leaves; its slot frees within a wait
        let start = Instant::now();
        loop {
            let mut s = connect(&server, "/stream.mjpg");
            let mut line = String::new();
            let _ = BufReader::new(&mut s).read_line(&mut line);
            if line.contains("200") {
                break;
            }
            assert!(line.contains("503"), "{line}");
            assert!(start.elapsed() < DEADLINE, "the slot was never freed");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn healthz_gets_through_hundreds_of_idle_and_trickling_clients() {
        let (server, published) = server(HttpOptions::default());
        published.publish(frame_jpeg(0.0), stats(1));
        let addr = server.local_addr();
        // 300 sockets: half send nothing, half a byte of a request every 300 ms.
        let mut crowd: Vec<TcpStream> = (0..300)
            .map(|_| TcpStream::connect_timeout(&addr, DEADLINE).unwrap())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let trickler = {
            let mut tricklers: Vec<TcpStream> = crowd.drain(150..).collect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let head = b"GET /stream.mjpg HTTP/1.1\r\n";
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    for s in &mut tricklers {
                        let _ = s.write(&head[i % head.len()..][..1]);
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        };
        let published_frames = {
            let (published, stop) = (published.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 1;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    published.set_stats(stats(n));
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let checks_until = Instant::now() + Duration::from_secs(4);
        let mut checks = 0;
        while Instant::now() < checks_until {
            let asked = Instant::now();
            let (status, _, _) = get(&server, "/healthz");
            let took = asked.elapsed();
            assert_eq!(status, 200);
            assert!(took < Duration::from_secs(2), "/healthz took {took:?}");
            assert_eq!(get(&server, "/stats.json").0, 200);
            checks += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::SeqCst);
        trickler.join().unwrap();
        published_frames.join().unwrap();
        assert!(checks >= 5);
        drop(crowd);
    }

    #[test]
    fn a_request_head_has_one_deadline_however_it_trickles() {
        let options = HttpOptions {
            head_timeout: Duration::from_millis(400),
            ..HttpOptions::default()
        };
        let (server, _published) = server(options);
        let mut s = TcpStream::connect_timeout(&server.local_addr(), DEADLINE).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let start = Instant::now();
        let mut raw = Vec::new();
        // A byte every 100 ms: each read() would be within a per-read timeout.
        for b in b"GET /healthz HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            assert!(start.elapsed() < DEADLINE, "never cut off");
            let _ = s.write_all(&[*b]);
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }

    #[test]
    fn streams_and_connections_are_capped_but_health_answers() {
        let options = HttpOptions {
            max_streams: 2,
            ..HttpOptions::default()
        };
        let (running, published) = server(options);
        published.publish(frame_jpeg(0.0), stats(1));
        let _viewers = [
            connect(&running, "/stream.mjpg"),
            connect(&running, "/stream.mjpg"),
        ];
        wait_until("two viewers", || published.clients() == 2);
        assert_eq!(get(&running, "/stream.mjpg").0, 503, "a third viewer");
        assert_eq!(get(&running, "/healthz").0, 200);
        assert_eq!(get(&running, "/stats.json").0, 200);
        assert_eq!(get(&running, "/snapshot.jpg").0, 200);

        // Past max_connections the accept loop answers 503 itself.
        let options = HttpOptions {
            max_connections: 3,
            ..HttpOptions::default()
        };
        let (small, _published) = server(options);
        let _idle: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(small.local_addr()).unwrap())
            .collect();
        let mut refused = TcpStream::connect(small.local_addr()).unwrap();
        refused.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut raw = String::new();
        let _ = refused.read_to_string(&mut raw);
        assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    }

    #[test]
    fn foreign_hosts_and_missing_tokens_are_refused() {
        let options = HttpOptions {
            token: Some("s3cret".into()),
            ..HttpOptions::default()
        };
        let (running, published) = server(options);
        published.publish(frame_jpeg(0.0), stats(1));
        let addr = running.local_addr();
        let ask = |path: &str, headers: &str| {
            status_of(addr, &format!("GET {path} HTTP/1.1\r\n{headers}\r\n"))
        };
        assert_eq!(
            ask("/healthz", "Host: localhost\r\n"),
            200,
            "health needs no token"
        );
        assert_eq!(ask("/stats.json", "Host: localhost\r\n"), 401);
        assert_eq!(ask("/", ""), 401);
        assert_eq!(ask("/stats.json?token=s3cret", "Host: 127.0.0.1\r\n"), 200);
        assert_eq!(ask("/stats.json", "Authorization: Bearer s3cret\r\n"), 200);
        assert_eq!(ask("/stats.json", "Authorization: Bearer wrong\r\n"), 401);
        // DNS rebinding: a page of evil.example whose name now points here.
        assert_eq!(
            ask("/stats.json?token=s3cret", "Host: evil.example:8080\r\n"),
            403
        );
        assert_eq!(ask("/healthz", "Host: evil.example\r\n"), 403);
        assert_eq!(status_of(addr, "GARBAGE\r\n\r\n"), 400);
        assert_eq!(
            status_of(addr, &format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(8250))),
            414
        );
        assert_eq!(
            status_of(
                addr,
                &format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(8250))
            ),
            431
        );
        // a bare LF, then CRLF, ends the head as well
        assert_eq!(
            status_of(addr, "GET /healthz HTTP/1.1\nHost: localhost\n\r\n"),
            200
        );
        let err = HttpServer::start_with(
            "127.0.0.1:0",
            Arc::new(Published::new()),
            HttpOptions {
                token: Some(" ".into()),
                ..HttpOptions::default()
            },
        );
        assert!(err.is_err(), "an empty token is refused");
    }
}
