//! The HTTP side of a metrics endpoint, free of I/O: what a request head
//! asks for, and the bytes of the answer. One request per connection; the
//! connection closes after the answer.

/// Longest request head accepted, in bytes (a scrape's is a few hundred).
pub const MAX_HEAD: usize = 8 * 1024;

/// What a request head (so far) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The head is not complete yet: read more (while under [`MAX_HEAD`]).
    Incomplete,
    /// `GET /metrics`: the exposition.
    Metrics,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    MethodNotAllowed,
    /// Not HTTP/1.x, or malformed: 400 and close.
    Bad(String),
    /// Longer than [`MAX_HEAD`] without ending: 431 and close.
    TooLarge,
}

/// Reads the head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Request::TooLarge,
        Ok(httparse::Status::Partial) => Request::Incomplete,
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => Request::TooLarge,
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split('?').next().unwrap_or("");
            match (req.method, path) {
                (Some("GET"), "/metrics") => Request::Metrics,
                (Some("GET"), _) => Request::NotFound,
                _ => Request::MethodNotAllowed,
            }
        }
        Err(httparse::Error::TooManyHeaders) => Request::TooLarge,
        Err(e) => Request::Bad(e.to_string()),
    }
}

/// The content type of the text that `prometheus_client` encodes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A whole response: status line, headers (the connection closes after
/// it) and `body`.
pub fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The response to a request that is not a scrape.
pub fn refusal(req: &Request) -> Vec<u8> {
    let text = "text/plain; charset=utf-8";
    match req {
        Request::NotFound => response(404, text, "not found: metrics are at GET /metrics\n"),
        Request::MethodNotAllowed => response(405, text, "only GET /metrics is served here\n"),
        Request::TooLarge => response(431, text, "request head too large\n"),
        Request::Bad(e) => response(400, text, &format!("bad request: {e}\n")),
        Request::Incomplete | Request::Metrics => response(500, text, "internal error\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Request::Metrics);
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Request::Metrics);
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHo"), Request::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n"), Request::MethodNotAllowed);
        assert!(matches!(parse(b"\x00\x01garbage\r\n\r\n"), Request::Bad(_)));
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 1, b'a');
        assert_eq!(parse(&long), Request::TooLarge);
        let r = String::from_utf8(refusal(&Request::NotFound)).unwrap();
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n") && r.contains("connection: close"));
    }
}
