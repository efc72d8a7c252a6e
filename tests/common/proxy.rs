//! A fault-injecting HTTP proxy for the S3 tests: it sits between walfetch and the S3
//! server on 127.0.0.1 and, for requests matching a rule, injects a connection reset in
//! the middle of a body, an error status (500, 503 SlowDown), added latency, a body
//! cut short under a full Content-Length, a stall that never answers, or an answer that
//! is not S3's at all (a bare 404, an HTML page). Every request
//! line and its Range header is recorded, so tests can assert ranged resumes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What to do to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward the response head and `after` body bytes, then reset the connection (RST).
    ResetAfter(usize),
    /// Forward the head and `after` body bytes, then close cleanly (body shorter than Content-Length).
    CutShortAfter(usize),
    /// Answer with this status and an S3 error code, without contacting the server.
    Status(u16, &'static str),
    /// Wait this long, then forward normally.
    Delay(Duration),
    /// Read the request and never answer.
    Stall,
    /// Forward the body slowly: this many bytes, then a pause, repeatedly.
    Throttle(usize, Duration),
    /// Answer with this status, content type (none: no header) and body, without
    /// contacting the server: what a proxy, a load balancer or a wrong host sends.
    Answer(u16, Option<&'static str>, &'static str),
}

/// A rule: requests whose first line contains `matches` get `fault`, `times` times.
/// `matches` may be `text|range`: then the Range header must also start with `range`
/// (`part_001|bytes=0-` is the first part of a download read in parts).
#[derive(Debug, Clone)]
pub struct Rule {
    pub matches: String,
    pub fault: Fault,
    pub times: usize,
}

/// One request as seen by the proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    pub line: String,
    pub range: Option<String>,
    /// Body bytes the proxy passed on to the client for this request (so far).
    pub served: Arc<AtomicU64>,
    /// The request's header lines.
    pub head: Vec<String>,
}

impl Seen {
    /// The value of header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.head[1..], name)
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

/// The proxy; stops accepting when dropped.
pub struct FaultProxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let (st, sp) = (st.clone(), sp.clone());
                        thread::spawn(move || handle(client, upstream_port, st, sp));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy { port, state, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a rule.
    pub fn inject(&self, matches: &str, fault: Fault, times: usize) {
        self.state.lock().unwrap().rules.push(Rule {
            matches: matches.to_string(),
            fault,
            times,
        });
    }

    /// Removes every rule: from now on everything is forwarded as it is.
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn reset(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a valid socket with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Reads an HTTP head (through the blank line); returns its lines.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Some(lines);
        }
        lines.push(line);
    }
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn handle(client: TcpStream, upstream_port: u16, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    // One request per connection: every response says Connection: close.
    let Some(head) = read_head(&mut reader) else {
        return;
    };
    let mut body = vec![0u8; header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let served = Arc::new(AtomicU64::new(0));
    let fault = {
        let mut st = state.lock().unwrap();
        st.seen.push(Seen {
            line: head[0].clone(),
            range: header(&head, "range").map(str::to_string),
            served: Arc::clone(&served),
            head: head.clone(),
        });
        let range = header(&head, "range").unwrap_or("");
        let rule = st.rules.iter_mut().find(|r| {
            let (line, want) = r.matches.split_once('|').unwrap_or((&r.matches, ""));
            r.times > 0 && head[0].contains(line) && range.starts_with(want)
        });
        rule.map(|r| {
            r.times -= 1;
            r.fault.clone()
        })
    };
    match &fault {
        Some(Fault::Status(code, s3code)) => {
            let xml = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3code}</Code><Message>injected</Message></Error>");
            let _ = write!(
                client,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            );
            return;
        }
        Some(Fault::Answer(code, content_type, body)) => {
            let content_type = content_type.map(|t| format!("Content-Type: {t}\r\n")).unwrap_or_default();
            let _ = write!(
                client,
                "HTTP/1.1 {code} Answered\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            return;
        }
        Some(Fault::Stall) => {
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        Some(Fault::Delay(d)) => thread::sleep(*d),
        _ => {}
    }
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        return;
    };
    let mut req = String::new();
    for l in &head {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            req.push_str(l);
            req.push_str("\r\n");
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    if upstream.write_all(req.as_bytes()).and_then(|_| upstream.write_all(&body)).is_err() {
        return;
    }
    let mut up = BufReader::new(upstream);
    let Some(resp_head) = read_head(&mut up) else {
        return;
    };
    let mut out = String::new();
    for l in &resp_head {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    if client.write_all(out.as_bytes()).is_err() {
        return;
    }
    let limit = match fault {
        Some(Fault::ResetAfter(n)) | Some(Fault::CutShortAfter(n)) => Some(n),
        _ => None,
    };
    let mut sent = 0usize;
    let chunk = match &fault {
        Some(Fault::Throttle(bytes, _)) => *bytes,
        _ => 16 * 1024,
    };
    let mut buf = vec![0u8; chunk];
    loop {
        let n = match up.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) => n.min(l - sent),
            None => n,
        };
        if client.write_all(&buf[..n]).is_err() {
            return;
        }
        served.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(Fault::Throttle(_, pause)) = &fault {
            thread::sleep(*pause);
        }
        sent += n;
        if limit == Some(sent) {
            let _ = client.flush();
            if matches!(fault, Some(Fault::ResetAfter(_))) {
                reset(&client);
            } else {
                let _ = client.shutdown(Shutdown::Both);
            }
            return;
        }
    }
}
