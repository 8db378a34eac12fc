//! Scraping a Prometheus endpoint (a node's or a daemon's) and reading it
//! with a Prometheus text parser (`prometheus-parse`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

use super::wait_until;

/// Sends `request` as it is and returns everything the endpoint answers
/// until it closes the connection.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the endpoint closes the connection after its answer");
    String::from_utf8(out).unwrap()
}

/// `GET /metrics`, parsed.
pub fn scrape(addr: SocketAddr) -> Scrape {
    let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: prometheus\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the sample `metric` whose labels include `labels`.
pub fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric} is not a single value: {other:?}"),
        })
}

/// Scrapes `addr` until `metric{labels}` is `want` (up to `within`);
/// panics with what it last saw. Returns the last scrape.
pub fn wait_value(addr: SocketAddr, metric: &str, labels: &[(&str, &str)], want: f64, within: Duration) -> Scrape {
    let mut last = None;
    let ok = wait_until(within, || {
        let s = scrape(addr);
        last = value(&s, metric, labels);
        last == Some(want)
    });
    assert!(ok, "{metric}{labels:?} at {addr} stayed {last:?}, want {want}");
    scrape(addr)
}
