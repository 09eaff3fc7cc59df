//! The access log: one line per request, kept off the request's way.
//!
//! A request formats its line (text or JSON, the same fields and layout as keygate's other log
//! lines) into its own thread's buffer: no allocation, no system call, no lock anyone else holds
//! but for the moment the writer swaps the buffer out. A thread of the log's own writes the
//! buffers out, every [`FLUSH_EVERY`] or as soon as one holds [`BLOCK`] bytes, one `write` per
//! buffer (as nginx's `access_log ... buffer= flush=`).
//!
//! - **Never blocks a request**: if the output cannot keep up (a slow disk, a stopped pipe), a
//!   thread's buffer stops growing at [`Settings::max_buffered`] and further lines are dropped,
//!   counted in `keygate_access_log_dropped_total` and said in a warning. Memory is bounded by
//!   that per thread.
//! - **Never lost on a graceful shutdown**: [`AccessLog::close`] writes out every buffer after
//!   the last request is answered, and waits for the writer.
//! - Nothing secret: the path without its query string, the client id, the business code.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::LogFormat;

/// A buffer is written out once it holds this much.
pub const BLOCK: usize = 32 * 1024;
/// And at least this often while it holds anything.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One request's line.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub outcome: &'a str,
    /// 24 hex characters, or empty when no credential was accepted.
    pub client_id: &'a [u8],
    pub latency_us: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub format: LogFormat,
    /// A thread's buffer grows to this at most while the output lags; lines beyond are dropped.
    pub max_buffered: usize,
    pub flush_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self { format: LogFormat::Text, max_buffered: 1024 * 1024, flush_every: FLUSH_EVERY }
    }
}

/// The access log of one server (see the module's documentation).
pub struct AccessLog {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Shared {
    id: u64,
    settings: Settings,
    /// Every thread's buffer that has had a line.
    slots: Mutex<Vec<Arc<Slot>>>,
    closing: AtomicBool,
    dropped: AtomicU64,
    writer: std::thread::Thread,
}

#[derive(Default)]
struct Slot {
    buf: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").field("format", &self.shared.settings.format).finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Starts the log's writer thread, writing to `out` (the server's: standard error).
    pub fn start(settings: Settings, out: impl Write + Send + 'static) -> std::io::Result<Self> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Shared>>(1);
        let writer = std::thread::Builder::new().name("keygate-access-log".into()).spawn(move || {
            if let Ok(shared) = rx.recv() {
                write_until_closed(&shared, out);
            }
        })?;
        let shared = Arc::new(Shared {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            settings,
            slots: Mutex::default(),
            closing: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            writer: writer.thread().clone(),
        });
        tx.send(shared.clone()).expect("the writer thread waits for its log");
        Ok(Self { shared, writer: Mutex::new(Some(writer)) })
    }

    /// Adds one request's line to this thread's buffer (after [`AccessLog::close`], which comes
    /// after the last request, a line is dropped).
    pub fn record(&self, entry: &Entry<'_>) {
        let shared = &self.shared;
        with_slot(shared, |slot| {
            let mut buf = slot.buf.lock().unwrap_or_else(|p| p.into_inner());
            if buf.len() >= shared.settings.max_buffered {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let before = buf.len();
            format_line(&mut buf, shared.settings.format, SystemTime::now(), entry);
            if before < BLOCK && buf.len() >= BLOCK {
                drop(buf);
                shared.writer.unpark();
            }
        });
    }

    /// Lines dropped so far because the output could not keep up.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes out every line recorded so far and ends the writer (after the last request).
    pub fn close(&self) {
        let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        self.shared.closing.store(true, Ordering::Release);
        writer.thread().unpark();
        let _ = writer.join();
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Runs `f` on the calling thread's buffer of `shared`, registering one on first use.
fn with_slot(shared: &Arc<Shared>, f: impl FnOnce(&Slot)) {
    thread_local! {
        static SLOTS: RefCell<Vec<(u64, Arc<Slot>)>> = const { RefCell::new(Vec::new()) };
    }
    SLOTS.with_borrow_mut(|slots| {
        if let Some((_, slot)) = slots.iter().find(|(id, _)| *id == shared.id) {
            return f(slot);
        }
        // A log that has ended holds its slots no more: forget them here too.
        slots.retain(|(_, slot)| Arc::strong_count(slot) > 1);
        let slot = Arc::new(Slot { buf: Mutex::new(Vec::with_capacity(BLOCK + 1024)) });
        shared.slots.lock().unwrap_or_else(|p| p.into_inner()).push(slot.clone());
        f(&slot);
        slots.push((shared.id, slot));
    });
}

/// The writer thread: every `flush_every`, or when unparked by a full buffer or by close, writes
/// out each thread's buffer, swapping it for an empty one of the same capacity.
fn write_until_closed(shared: &Shared, mut out: impl Write) {
    let mut spare: Vec<u8> = Vec::with_capacity(BLOCK + 1024);
    let mut reported_dropped = 0;
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let closing = shared.closing.load(Ordering::Acquire);
        let slots: Vec<Arc<Slot>> = shared.slots.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for slot in &slots {
            {
                let mut buf = slot.buf.lock().unwrap_or_else(|p| p.into_inner());
                if buf.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *buf, &mut spare);
            }
            if let Err(e) = out.write_all(&spare) {
                let lines = spare.iter().filter(|&&b| b == b'\n').count() as u64;
                shared.dropped.fetch_add(lines, Ordering::Relaxed);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    last_warning = Some(std::time::Instant::now());
                    tracing::warn!(error = %e, "writing the access log failed: its lines are dropped");
                }
            }
            spare.clear();
            if spare.capacity() > 4 * BLOCK {
                spare.shrink_to(BLOCK + 1024);
            }
        }
        let _ = out.flush();
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped > reported_dropped {
            metrics::counter!("keygate_access_log_dropped_total").increment(dropped - reported_dropped);
            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                last_warning = Some(std::time::Instant::now());
                tracing::warn!(
                    dropped = dropped - reported_dropped,
                    "access log lines dropped: the output does not keep up with the requests"
                );
            }
            reported_dropped = dropped;
        }
        if closing {
            // This sweep began after close was asked for, so after the last request's line.
            return;
        }
        std::thread::park_timeout(shared.settings.flush_every);
    }
}

/// Appends `entry`'s line: `text` as keygate's other log lines (tracing's format without colour),
/// or one JSON object as `--log-format json` writes them.
pub fn format_line(out: &mut Vec<u8>, format: LogFormat, now: SystemTime, e: &Entry<'_>) {
    let mut ts = [0u8; 27];
    timestamp(now, &mut ts);
    let mut n = itoa::Buffer::new();
    match format {
        LogFormat::Text => {
            out.extend_from_slice(&ts);
            out.extend_from_slice(b"  INFO keygate::access: request_id=\"");
            debug_str(out, e.request_id);
            out.extend_from_slice(b"\" method=");
            out.extend_from_slice(e.method.as_bytes());
            out.extend_from_slice(b" path=");
            out.extend_from_slice(e.path.as_bytes());
            out.extend_from_slice(b" route=");
            out.extend_from_slice(e.route.as_bytes());
            out.extend_from_slice(b" status=");
            out.extend_from_slice(n.format(e.status).as_bytes());
            out.extend_from_slice(b" outcome=");
            out.extend_from_slice(e.outcome.as_bytes());
            out.extend_from_slice(b" client_id=\"");
            out.extend_from_slice(e.client_id);
            out.extend_from_slice(b"\" latency_us=");
            out.extend_from_slice(n.format(e.latency_us).as_bytes());
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            out.extend_from_slice(&ts);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"request_id\":\"");
            json_str(out, e.request_id);
            out.extend_from_slice(b"\",\"method\":\"");
            json_str(out, e.method);
            out.extend_from_slice(b"\",\"path\":\"");
            json_str(out, e.path);
            out.extend_from_slice(b"\",\"route\":\"");
            json_str(out, e.route);
            out.extend_from_slice(b"\",\"status\":");
            out.extend_from_slice(n.format(e.status).as_bytes());
            out.extend_from_slice(b",\"outcome\":\"");
            json_str(out, e.outcome);
            out.extend_from_slice(b"\",\"client_id\":\"");
            out.extend_from_slice(e.client_id);
            out.extend_from_slice(b"\",\"latency_us\":");
            out.extend_from_slice(n.format(e.latency_us).as_bytes());
            out.extend_from_slice(b"},\"target\":\"keygate::access\"}");
        }
    }
    out.push(b'\n');
}

/// `now` as RFC 3339 in UTC with microseconds (`2026-12-02T01:52:13.123456Z`), as tracing writes
/// it. The date and time of day are worked out once a second per thread.
fn timestamp(now: SystemTime, out: &mut [u8; 27]) {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let since = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        let mut text = Vec::with_capacity(20);
        let _ =
            write!(text, "{}", humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)));
        prefix.copy_from_slice(&text[..19]);
        SECOND.set((secs, prefix));
    }
    out[..19].copy_from_slice(&prefix);
    out[19] = b'.';
    let mut micros = since.subsec_micros();
    for i in (20..26).rev() {
        out[i] = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out[26] = b'Z';
}

/// A string as Rust's `Debug` writes it between the quotes (what tracing's text format does with
/// a string field). Request ids are ASCII letters, digits and `-`, so this is a copy but for a
/// client's strange one (only believed from a trusted proxy).
fn debug_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
        out.extend_from_slice(s.as_bytes());
    } else {
        let _ = write!(out, "{}", s.escape_debug());
    }
}

/// A string escaped for a JSON string (RFC 8259: `"`, `\` and control characters).
fn json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escaped);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn entry<'a>(path: &'a str, request_id: &'a str) -> Entry<'a> {
        Entry {
            request_id,
            method: "GET",
            path,
            route: "/auth/verify",
            status: 200,
            outcome: "1000",
            client_id: b"0123456789abcdef01234567",
            latency_us: 42,
        }
    }

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_176_333_004_056)
    }

    #[test]
    fn text_lines_are_tracings_layout() {
        let mut out = Vec::new();
        format_line(&mut out, LogFormat::Text, at(), &entry("/auth/verify", "abc-1"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-02T01:52:13.004056Z  INFO keygate::access: request_id=\"abc-1\" method=GET path=/auth/verify \
             route=/auth/verify status=200 outcome=1000 client_id=\"0123456789abcdef01234567\" latency_us=42\n"
        );
    }

    #[test]
    fn json_lines_are_json_with_every_field() {
        let mut out = Vec::new();
        let odd = "/a\"b\\c\u{1}d/é";
        format_line(&mut out, LogFormat::Json, at(), &entry(odd, "x\"y"));
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2026-12-02T01:52:13.004056Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "keygate::access");
        let f = &v["fields"];
        assert_eq!(f["request_id"], "x\"y");
        assert_eq!(f["path"], odd);
        assert_eq!((f["method"].as_str(), f["route"].as_str()), (Some("GET"), Some("/auth/verify")));
        assert_eq!((f["status"].as_u64(), f["latency_us"].as_u64()), (Some(200), Some(42)));
        assert_eq!((f["outcome"].as_str(), f["client_id"].as_str()), (Some("1000"), Some("0123456789abcdef01234567")));
    }

    #[test]
    fn an_odd_request_id_is_quoted_as_debug_would() {
        let mut out = Vec::new();
        format_line(&mut out, LogFormat::Text, at(), &entry("/", "a\"b c"));
        assert!(String::from_utf8(out).unwrap().contains(r#"request_id="a\"b c""#));
    }

    #[test]
    fn timestamps_follow_the_clock_within_and_across_seconds() {
        for (micros, text) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (999_999, "1970-01-01T00:00:00.999999Z"),
            (1_000_000, "1970-01-01T00:00:01.000000Z"),
            (951_782_400_123_000, "2000-02-29T00:00:00.123000Z"),
        ] {
            let mut ts = [0u8; 27];
            timestamp(SystemTime::UNIX_EPOCH + Duration::from_micros(micros), &mut ts);
            assert_eq!(std::str::from_utf8(&ts).unwrap(), text);
        }
    }

    /// An output that hands what it is given to the test.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(sink: &Sink) -> Vec<String> {
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap().lines().map(str::to_owned).collect()
    }

    #[test]
    fn every_line_of_every_thread_is_written_by_close_whole_and_once() {
        let sink = Sink::default();
        let slow = Settings { flush_every: Duration::from_secs(3600), ..Settings::default() };
        let log = Arc::new(AccessLog::start(slow, sink.clone()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        let id = format!("t{t}-{i}");
                        log.record(&entry("/auth/verify", &id));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        log.close();
        let got = lines(&sink);
        assert_eq!(got.len(), 20_000);
        let mut ids: Vec<&str> = got.iter().map(|l| l.split('"').nth(1).unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 20_000, "each line once");
        assert!(got.iter().all(|l| l.ends_with("latency_us=42")), "whole lines only");
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_quiet_log_is_written_within_its_flush_interval() {
        let sink = Sink::default();
        let settings = Settings { flush_every: Duration::from_millis(50), ..Settings::default() };
        let log = AccessLog::start(settings, sink.clone()).unwrap();
        log.record(&entry("/one", "r1"));
        let t = Instant::now();
        while lines(&sink).is_empty() {
            assert!(t.elapsed() < Duration::from_secs(5), "a single line waits for its flush, not for more lines");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(lines(&sink)[0].contains("path=/one"));
    }

    /// An output that blocks until the test lets it go (a stalled disk or pipe).
    struct Stalled(Arc<(Mutex<bool>, std::sync::Condvar)>, Sink);
    impl Write for Stalled {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.0;
            let _g = cv.wait_while(lock.lock().unwrap(), |stalled| *stalled).unwrap();
            self.1.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_neither_blocks_requests_nor_grows_memory() {
        let gate = Arc::new((Mutex::new(true), std::sync::Condvar::new()));
        let sink = Sink::default();
        let settings =
            Settings { max_buffered: 64 * 1024, flush_every: Duration::from_millis(10), ..Settings::default() };
        let log = AccessLog::start(settings, Stalled(gate.clone(), sink.clone())).unwrap();
        // The writer takes the first buffer and blocks in write; everything after waits in (or is
        // dropped from) this thread's buffer.
        log.record(&entry("/first", "r0"));
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        for i in 0..100_000 {
            log.record(&entry("/auth/verify", &format!("r{i}")));
        }
        let took = t.elapsed();
        assert!(took < Duration::from_secs(5), "recording never waits for the output ({took:?})");
        let kept = 100_000 - log.dropped();
        assert!(log.dropped() > 0);
        // What is buffered is bounded: max_buffered and the line that crossed it.
        let line = {
            let mut one = Vec::new();
            format_line(&mut one, LogFormat::Text, SystemTime::now(), &entry("/auth/verify", "r99999"));
            one.len() as u64
        };
        assert!(kept <= 64 * 1024 / (line - 4) + 1, "{kept} lines of ~{line} bytes kept");
        *gate.0.lock().unwrap() = false;
        gate.1.notify_all();
        log.close();
        let got = lines(&sink);
        assert_eq!(got.len() as u64, 1 + kept, "every line not dropped is written");
    }
}
