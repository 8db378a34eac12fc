//! `luahost bench raw`: the loopback limit of this machine for the `call`
//! workload, with no Lua and no MessagePack.
//!
//! An echo server and a client run as two processes (this binary's hidden
//! `bench-raw-peer` mode, `--serve` and `--connect`), each on a
//! current-thread tokio runtime like a node. They speak the seed-003 frames
//! of `codec::wire` over one TCP connection with TCP_NODELAY: the client
//! keeps `conc` requests in flight (frame session = request id, `payload`
//! bytes of data, 16 when 0), the server echoes each frame back. Like a
//! node, each side handles a whole read burst and then writes what it
//! produced in one write. Replies come back in order on the one
//! connection, so the client checks each reply's session against the oldest
//! request in flight.
//!
//! The peers talk to the parent over stdout:
//! - server: `LISTENING <port>`;
//! - client: `MEASURE start`, `MEASURE end`, then
//!   `RAWDATA rate=R p50_us=P p99_us=Q count=N`, or `FAIL <why>`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use luahost::codec::wire::{self, FrameDecoder};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use crate::benchspec::{cpu_secs, BenchResult, BenchSpec};

/// Longest a peer process lives, whatever happens (a bound on every loop).
const PEER_MAX: Duration = Duration::from_secs(900);
/// Warm-up before measuring, as the other workloads.
const WARM: f64 = 0.5;
/// Data bytes of a request when the payload is 0 (about what a small call's
/// envelope and arguments take).
const SMALL: usize = 16;

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout, read on a thread.
fn lines_of(child: &mut std::process::Child) -> Result<std::sync::mpsc::Receiver<(Instant, String)>, String> {
    let out = child.stdout.take().ok_or("no child stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
}

/// One `raw` measurement: starts the two peers, samples their CPU at the
/// client's markers.
pub fn run_once(spec: &BenchSpec) -> Result<BenchResult, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let peer = |args: &[String]| -> Result<Kill, String> {
        Command::new(&exe)
            .arg("bench-raw-peer")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map(Kill)
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))
    };
    let mut server = peer(&["--serve".into()])?;
    let from_server = lines_of(&mut server.0)?;
    let (_, listening) = from_server
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the raw echo server never listened".to_string())?;
    let port: u16 = listening
        .strip_prefix("LISTENING ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("raw echo server: {listening}"))?;
    let mut client = peer(&[
        "--connect".into(),
        format!("127.0.0.1:{port}"),
        "--conc".into(),
        spec.conc.to_string(),
        "--payload".into(),
        spec.payload.to_string(),
        "--secs".into(),
        spec.secs.to_string(),
    ])?;
    let from_client = lines_of(&mut client.0)?;
    let pids = [server.0.id(), client.0.id()];
    let cpu = || pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    let deadline = Instant::now() + Duration::from_secs_f64(spec.secs + 60.0);
    let (mut start, mut end) = (None, None);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, line) = from_client
            .recv_timeout(left)
            .map_err(|_| "the raw client did not finish".to_string())?;
        if line == "MEASURE start" {
            start = Some((at, cpu()));
        } else if line == "MEASURE end" {
            end = Some((at, cpu()));
        } else if line.starts_with("FAIL") {
            return Err(format!("raw client: {line}"));
        } else if line.starts_with("RAWDATA ") {
            let (Some(s), Some(e)) = (start, end) else {
                return Err("raw client: measurement markers missing".into());
            };
            let wall = e.0.duration_since(s.0).as_secs_f64().max(1e-3);
            return Ok(BenchResult {
                rate: field(&line, "rate").ok_or_else(|| format!("bad raw client output: {line}"))?,
                p50_us: field(&line, "p50_us").unwrap_or(0),
                p99_us: field(&line, "p99_us").unwrap_or(0),
                cpu_pct: (e.1 - s.1) / wall * 100.0,
            });
        }
    }
}

// ---------------------------------------------------------------------------
// The peer processes (`luahost bench-raw-peer`, hidden)

/// What a peer process was asked to do.
pub struct PeerSpec {
    /// Serve (echo) instead of connecting.
    pub serve: bool,
    /// The server's address (client).
    pub connect: Option<String>,
    /// Requests in flight (client).
    pub conc: u32,
    /// Data bytes per request (client; 0: 16).
    pub payload: usize,
    /// Measured seconds (client).
    pub secs: f64,
}

fn say(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
    let _ = o.flush();
}

/// A peer process: see the module's comment.
pub fn peer_process(spec: &PeerSpec) -> Result<(), String> {
    // one thread, as a node
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let r = rt.block_on(async {
        let work = async {
            if spec.serve {
                serve().await
            } else {
                let addr = spec.connect.as_deref().ok_or("--connect or --serve")?;
                client(addr, spec.conc.max(1), spec.payload, spec.secs).await
            }
        };
        tokio::time::timeout(PEER_MAX, work)
            .await
            .unwrap_or_else(|_| Err("ran too long".into()))
    });
    if let Err(e) = &r {
        say(&format!("FAIL {e}"));
    }
    r
}

/// Writes as much of `out` as the socket takes now.
fn flush(wr: &OwnedWriteHalf, out: &mut BytesMut) -> Result<(), String> {
    while !out.is_empty() {
        match wr.try_write(out) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Reads the next burst into `inb` (0 at end of stream); while output is
/// stuck, also writes it as the socket drains (so neither side can block
/// the other with large payloads).
async fn read_burst(
    rd: &mut OwnedReadHalf,
    wr: &OwnedWriteHalf,
    inb: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<usize, String> {
    loop {
        inb.reserve(64 * 1024);
        if out.is_empty() {
            return rd.read_buf(inb).await.map_err(|e| e.to_string());
        }
        tokio::select! {
            r = rd.read_buf(inb) => return r.map_err(|e| e.to_string()),
            w = wr.writable() => {
                w.map_err(|e| e.to_string())?;
                flush(wr, out)?;
            }
        }
    }
}

fn split(s: TcpStream) -> (OwnedReadHalf, OwnedWriteHalf) {
    let _ = s.set_nodelay(true);
    s.into_split()
}

async fn serve() -> Result<(), String> {
    let l = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    say(&format!(
        "LISTENING {}",
        l.local_addr().map_err(|e| e.to_string())?.port()
    ));
    let (s, _) = tokio::time::timeout(Duration::from_secs(60), l.accept())
        .await
        .map_err(|_| "no client came")?
        .map_err(|e| e.to_string())?;
    let (mut rd, wr) = split(s);
    let mut dec = FrameDecoder::default();
    let (mut inb, mut out) = (BytesMut::new(), BytesMut::new());
    loop {
        if read_burst(&mut rd, &wr, &mut inb, &mut out).await? == 0 {
            return Ok(());
        }
        while let Some(m) = dec.decode(&mut inb).map_err(|e| e.to_string())? {
            wire::put_message(&mut out, m.session, &m.data);
        }
        flush(&wr, &mut out)?;
    }
}

async fn client(addr: &str, conc: u32, payload: usize, secs: f64) -> Result<(), String> {
    let s = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out")?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut rd, wr) = split(s);
    let data = vec![b'x'; if payload == 0 { SMALL } else { payload }];
    let mut dec = FrameDecoder::default();
    let (mut inb, mut out) = (BytesMut::new(), BytesMut::new());
    let mut in_flight: VecDeque<(u32, Instant)> = VecDeque::with_capacity(conc as usize);
    let mut next_id = 1u32;
    let t0 = Instant::now();
    let (t_measure, t_end) = (
        t0 + Duration::from_secs_f64(WARM),
        t0 + Duration::from_secs_f64(WARM + secs),
    );
    for _ in 0..conc {
        wire::put_message(&mut out, next_id, &data);
        in_flight.push_back((next_id, Instant::now()));
        next_id = next_id.wrapping_add(1);
    }
    flush(&wr, &mut out)?;
    let (mut started, mut ended) = (false, false);
    let mut count = 0u64;
    let mut lat: Vec<u32> = Vec::new();
    while !in_flight.is_empty() {
        if read_burst(&mut rd, &wr, &mut inb, &mut out).await? == 0 {
            return Err("the server closed the connection".into());
        }
        while let Some(m) = dec.decode(&mut inb).map_err(|e| e.to_string())? {
            let now = Instant::now();
            let (id, sent) = in_flight.pop_front().ok_or("a reply to no request")?;
            if m.session != id || m.data.len() != data.len() {
                return Err(format!(
                    "reply session {} ({} bytes), expected {id} ({} bytes)",
                    m.session,
                    m.data.len(),
                    data.len()
                ));
            }
            if !started && now >= t_measure {
                started = true;
                say("MEASURE start");
            }
            if !ended && now >= t_end {
                ended = true;
                say("MEASURE end");
            }
            if started && !ended {
                count += 1;
                if sent >= t_measure {
                    lat.push(now.duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            if !ended {
                wire::put_message(&mut out, next_id, &data);
                in_flight.push_back((next_id, now));
                next_id = next_id.wrapping_add(1);
            }
        }
        flush(&wr, &mut out)?;
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    say(&format!(
        "RAWDATA rate={:.0} p50_us={} p99_us={} count={count}",
        count as f64 / secs.max(1e-3),
        pct(0.5),
        pct(0.99)
    ));
    Ok(())
}
