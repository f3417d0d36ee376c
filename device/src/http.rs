//! The HTTP output: a live page, an MJPEG stream, snapshots, stats, health and metrics,
//! served with `std::net` and a thread per client.
//!
//! The pipeline hands each encoded frame to [`Published::publish`], which only swaps an
//! `Arc` under a mutex and wakes the stream threads; it never touches a socket, so a
//! slow or vanished client cannot stall it. Each stream thread sends the newest frame
//! it has not sent yet (skipping those it was too slow for) and ends when its socket
//! fails or a write times out.
//!
//! | path | answer |
//! |---|---|
//! | `/` | the page: stream, legend, stats refreshed from `/stats.json` every second |
//! | `/stream.mjpg` | `multipart/x-mixed-replace` JPEG frames |
//! | `/snapshot.jpg` | the latest frame (503 before the first) |
//! | `/stats.json` | [`Stats`] plus the client count |
//! | `/healthz` | 200 `ok` while frames or heartbeats arrive, else 503 |
//! | `/metrics` | Prometheus text format |

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::overlay::PresentClass;

pub use crate::jpeg::{encode_jpeg, DEFAULT_QUALITY};

/// Where the server listens unless configured: this machine only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// The multipart boundary of the MJPEG stream, and the stream's content type.
const BOUNDARY: &str = "segcamframe";
const MJPEG_TYPE: &str = "multipart/x-mixed-replace; boundary=segcamframe";

/// The live page (self-contained: no external scripts or styles).
const INDEX_HTML: &str = include_str!("http_index.html");

/// What the pipeline reports with each frame.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Frames processed since start.
    pub frames: u64,
    pub fps: f32,
    /// Inference time of the latest frame.
    pub inference_ms: f32,
    /// Frames the pipeline dropped because it was busy.
    pub dropped_frames: u64,
    /// Frames skipped because they did not decode (corrupt MJPEG, unreadable files).
    #[serde(default)]
    pub corrupt_frames: u64,
    pub model: String,
    pub width: u32,
    pub height: u32,
    pub classes_present: Vec<PresentClass>,
    /// The source delivers nothing (camera unplugged, stream ended).
    pub no_signal: bool,
}

/// `/stats.json`: the pipeline's stats and what only the server knows.
#[derive(Serialize)]
struct StatsView<'a> {
    #[serde(flatten)]
    stats: &'a Stats,
    clients: usize,
    /// Milliseconds since the latest frame (null before the first).
    frame_age_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct Latest {
    jpeg: Option<Arc<Vec<u8>>>,
    /// Frames published so far: the sequence number of `jpeg`.
    seq: u64,
    stats: Stats,
    last_frame: Option<Instant>,
    last_alive: Option<Instant>,
}

/// The newest frame and stats, shared between the pipeline and the HTTP threads.
#[derive(Debug, Default)]
pub struct Published {
    latest: Mutex<Latest>,
    fresh: Condvar,
    /// Connected `/stream.mjpg` clients.
    clients: AtomicUsize,
}

impl Published {
    pub fn new() -> Self {
        Self::default()
    }

    /// Make `jpeg` the latest frame and wake the stream clients. Never blocks on them.
    pub fn publish(&self, jpeg: Vec<u8>, stats: Stats) {
        let now = Instant::now();
        let mut latest = self.lock();
        latest.jpeg = Some(Arc::new(jpeg));
        latest.seq += 1;
        latest.stats = stats;
        latest.last_frame = Some(now);
        latest.last_alive = Some(now);
        drop(latest);
        self.fresh.notify_all();
    }

    /// Replace the stats without a new frame (e.g. to report "no signal").
    pub fn set_stats(&self, stats: Stats) {
        self.lock().stats = stats;
    }

    /// Mark the pipeline alive while it has no frame to show (waiting for a camera).
    pub fn heartbeat(&self) {
        self.lock().last_alive = Some(Instant::now());
    }

    /// The latest frame and its sequence number.
    pub fn latest(&self) -> Option<(u64, Arc<Vec<u8>>)> {
        let latest = self.lock();
        latest.jpeg.clone().map(|j| (latest.seq, j))
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Connected stream clients (the pipeline may skip encoding when there are none).
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Whether a frame or a heartbeat came within `within`.
    pub fn alive(&self, within: Duration) -> bool {
        self.lock()
            .last_alive
            .is_some_and(|t| t.elapsed() <= within)
    }

    /// Wait up to `timeout` for a frame newer than `seen`.
    fn wait_newer(&self, seen: u64, timeout: Duration) -> Option<(u64, Arc<Vec<u8>>)> {
        let latest = self.lock();
        let (latest, _) = self
            .fresh
            .wait_timeout_while(latest, timeout, |l| l.seq <= seen)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &latest.jpeg {
            Some(jpeg) if latest.seq > seen => Some((latest.seq, jpeg.clone())),
            _ => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Latest> {
        // A panicked holder leaves consistent data (plain assignments): keep serving.
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Server limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// A client that accepts no bytes for this long is dropped.
    pub write_timeout: Duration,
    /// A client must send its request within this time.
    pub read_timeout: Duration,
    /// Connections served at once; more get 503.
    pub max_connections: usize,
    /// `/healthz` fails when neither a frame nor a heartbeat came for this long.
    pub stale_after: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            write_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            max_connections: 64,
            stale_after: Duration::from_secs(5),
        }
    }
}

/// What every connection thread shares.
struct Shared {
    published: Arc<Published>,
    options: HttpOptions,
    stop: AtomicBool,
    connections: AtomicUsize,
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
            source,
        };
        let listener = TcpListener::bind(addr).map_err(net)?;
        let local = listener.local_addr().map_err(net)?;
        let shared = Arc::new(Shared {
            published,
            options,
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
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
        self.shared.published.fresh.notify_all();
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
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // Out of descriptors or an aborted handshake: back off, keep serving.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let guard = ConnectionGuard::enter(&shared);
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("segcam-http-client".into())
            .spawn(move || {
                let _guard = guard;
                let _ = serve(stream, &shared, _guard.over_limit);
            });
    }
}

/// Counts a connection for its lifetime.
struct ConnectionGuard {
    shared: Arc<Shared>,
    over_limit: bool,
}

impl ConnectionGuard {
    fn enter(shared: &Arc<Shared>) -> Self {
        let before = shared.connections.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: shared.clone(),
            over_limit: before >= shared.options.max_connections,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A parsed request line.
struct Request {
    method: String,
    path: String,
}

/// Read the request head (at most 8 KiB) and parse its first line.
fn read_request(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 8192 {
            return Ok(None);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
    Ok(Some(Request {
        method: method.to_string(),
        path,
    }))
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

    fn text(status: &'static str, body: &str) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    fn write(&self, stream: &mut TcpStream, head_only: bool) -> io::Result<()> {
        let head = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n{}\r\n",
            self.status,
            self.content_type,
            self.body.len(),
            self.extra
        );
        stream.write_all(head.as_bytes())?;
        if !head_only {
            stream.write_all(&self.body)?;
        }
        stream.flush()
    }
}

fn serve(mut stream: TcpStream, shared: &Shared, over_limit: bool) -> io::Result<()> {
    stream.set_read_timeout(Some(shared.options.read_timeout))?;
    stream.set_write_timeout(Some(shared.options.write_timeout))?;
    let _ = stream.set_nodelay(true);
    if shared.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    let Some(request) = read_request(&mut stream)? else {
        return Response::text("400 Bad Request", "bad request\n").write(&mut stream, false);
    };
    if over_limit {
        return Response::text("503 Service Unavailable", "too many clients\n")
            .write(&mut stream, false);
    }
    let head_only = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut r = Response::text("405 Method Not Allowed", "only GET and HEAD\n");
            r.extra = "Allow: GET, HEAD\r\n";
            return r.write(&mut stream, false);
        }
    };
    let published = &shared.published;
    let response = match request.path.as_str() {
        "/" | "/index.html" => Response::new("200 OK", "text/html; charset=utf-8", INDEX_HTML),
        "/stream.mjpg" if !head_only => return stream_mjpeg(stream, shared),
        "/stream.mjpg" => Response::new("200 OK", MJPEG_TYPE, Vec::new()),
        "/snapshot.jpg" => match published.latest() {
            Some((_, jpeg)) => Response::new("200 OK", "image/jpeg", jpeg.as_slice()),
            None => Response::text("503 Service Unavailable", "no frame yet\n"),
        },
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
        "/healthz" => {
            if published.alive(shared.options.stale_after) {
                Response::text("200 OK", "ok\n")
            } else {
                Response::text("503 Service Unavailable", "no frames\n")
            }
        }
        "/metrics" => Response::new(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(&published.stats(), published.clients()),
        ),
        _ => Response::text("404 Not Found", "not found\n"),
    };
    response.write(&mut stream, head_only)
}

/// Stream frames until the client goes away, a write times out, or the server stops.
fn stream_mjpeg(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let published = &shared.published;
    published.clients.fetch_add(1, Ordering::SeqCst);
    struct Leave<'a>(&'a AtomicUsize);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _leave = Leave(&published.clients);

    // Each part is closed by the next boundary right away, so browsers show a frame
    // as soon as it arrives rather than when the following one starts.
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {MJPEG_TYPE}\r\nCache-Control: no-store\r\n\
         Pragma: no-cache\r\nConnection: close\r\n\r\n--{BOUNDARY}\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let mut seen = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some((seq, jpeg)) = published.wait_newer(seen, Duration::from_millis(500)) else {
            continue;
        };
        seen = seq;
        let part = format!(
            "Content-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        );
        stream.write_all(part.as_bytes())?;
        stream.write_all(&jpeg)?;
        stream.write_all(format!("\r\n--{BOUNDARY}\r\n").as_bytes())?;
    }
    Ok(())
}

/// The Prometheus text exposition of `stats`.
fn metrics_text(stats: &Stats, clients: usize) -> String {
    // f32 prints its shortest exact form ("29.97", not "29.969999313354492").
    let real = |v: f32| {
        if v.is_finite() {
            v.to_string()
        } else {
            "NaN".into()
        }
    };
    let metrics = [
        (
            "segcam_frames_total",
            "counter",
            "Frames processed since start.",
            stats.frames.to_string(),
        ),
        (
            "segcam_fps",
            "gauge",
            "Frames processed per second.",
            real(stats.fps),
        ),
        (
            "segcam_inference_ms",
            "gauge",
            "Inference time of the latest frame in milliseconds.",
            real(stats.inference_ms),
        ),
        (
            "segcam_dropped_frames_total",
            "counter",
            "Frames dropped because the pipeline was busy.",
            stats.dropped_frames.to_string(),
        ),
        (
            "segcam_corrupt_frames_total",
            "counter",
            "Frames skipped because they did not decode.",
            stats.corrupt_frames.to_string(),
        ),
        (
            "segcam_clients",
            "gauge",
            "Connected MJPEG stream clients.",
            clients.to_string(),
        ),
        (
            "segcam_no_signal",
            "gauge",
            "1 when the source delivers no frames.",
            u8::from(stats.no_signal).to_string(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in metrics {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

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

    fn frame_jpeg(t: f64) -> Vec<u8> {
        let scene = crate::scene::render_frame(3, t, 64, 48);
        encode_jpeg(&scene.image, 80).unwrap()
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
            no_signal: false,
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

        // Before the first frame: no snapshot, not healthy.
        assert_eq!(get(&server, "/snapshot.jpg").0, 503);
        assert_eq!(get(&server, "/healthz").0, 503);

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

        let (status, headers, body) = get(&server, "/healthz");
        assert_eq!(
            (status, header(&headers, "content-type")),
            (200, "text/plain; charset=utf-8")
        );
        assert_eq!(body, b"ok\n");

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
    fn healthz_follows_frames_and_heartbeats() {
        let options = HttpOptions {
            stale_after: Duration::from_millis(200),
            ..HttpOptions::default()
        };
        let (server, published) = server(options);
        published.heartbeat();
        assert_eq!(get(&server, "/healthz").0, 200, "alive without frames");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(get(&server, "/healthz").0, 503, "stale");
        published.publish(frame_jpeg(0.0), stats(1));
        assert_eq!(get(&server, "/healthz").0, 200);
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
}
