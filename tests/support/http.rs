//! Plain HTTP/1.1 GETs against the daemon's operations listener, and where to find it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The listener's base URL (`http://127.0.0.1:PORT`) from a run's log.
pub fn listener_url(log: &str) -> Option<String> {
    log.lines()
        .filter(|l| l.contains("operations listener"))
        .find_map(|l| {
            let rest = l.split("address=").nth(1)?;
            let url = rest.split_whitespace().next()?.trim_matches('"');
            Some(url.to_owned())
        })
}

/// GET `base` + `path`, with `Connection: close` (the whole answer is read to the end).
pub async fn get(base: &str, path: &str) -> Response {
    let host = base.trim_start_matches("http://");
    let fetch = async {
        let mut stream = TcpStream::connect(host)
            .await
            .expect("connect to the listener");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .expect("send request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .unwrap_or_else(|_| panic!("GET {base}{path}: no answer within 10 s"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: not an HTTP response: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status line: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        // Full bodies come with Content-Length (no chunking) and the connection closes.
        body: body.to_owned(),
    }
}
