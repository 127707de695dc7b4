//! The operations listener (`[http] listen`): a small HTTP/1 server on hyper, read-only.
//!
//! - `GET /metrics`: Prometheus (OpenMetrics text)
//! - `GET /healthz`: 200 while the pipeline moves (also during an S3 outage), 503 when a
//!   stage is stuck
//! - `GET /status`: JSON for scripts and `inboxd status`
//! - `GET /`: a status page that refreshes itself
//! - `GET /ledger`: every ledger record as one JSON line (for `inboxd ledger`, which cannot
//!   open the ledger while the daemon holds it)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Ops;
use crate::ledger::Ledger;

type Body = BoxBody<Bytes, std::io::Error>;

/// Binds the listener (an error here stops the start: the address is taken or not allowed).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `stop`. Each connection is served in a task of its own; a client that
/// misbehaves only loses its own connection.
pub async fn serve(listener: TcpListener, ops: Arc<Ops>, ledger: Ledger, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: try again shortly rather than end
                // the listener for good.
                Err(e) => {
                    tracing::warn!(error = %e, "operations listener cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let ops = ops.clone();
        let ledger = ledger.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ops = ops.clone();
                let ledger = ledger.clone();
                async move {
                    Ok::<_, Infallible>(if req.uri().path() == "/ledger" && is_read(&req) {
                        ledger_lines(ledger)
                    } else {
                        route(&ops, &req).map(|b| b.map_err(|never| match never {}).boxed())
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // Every connection ends with the listener: it holds the ledger, which a reload
            // must be able to open again (a kept-alive scraper connection would hold it on).
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn is_read<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET || req.method() == Method::HEAD
}

/// Bytes per chunk of the `/ledger` answer, and chunks read ahead of a slow client.
const LEDGER_CHUNK: usize = 64 * 1024;
const LEDGER_AHEAD: usize = 4;

/// Every ledger record as one JSON line, streamed: read on a blocking thread (sled calls
/// block) a chunk at a time, so a large ledger never sits in memory whole. A record that
/// cannot be read breaks the answer off (the client sees an incomplete answer, not a short
/// ledger); the reason goes to the log.
fn ledger_lines(ledger: Ledger) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(LEDGER_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(LEDGER_CHUNK);
        for rec in ledger.records() {
            let line = rec.and_then(|r| serde_json::to_vec(&r).map_err(Into::into));
            match line {
                Ok(line) => {
                    chunk.extend_from_slice(&line);
                    chunk.push(b'\n');
                }
                Err(e) => {
                    tracing::warn!(error = %e, "GET /ledger: a record cannot be read; answer broken off");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            }
            if chunk.len() >= LEDGER_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(LEDGER_CHUNK));
                // The client went away: stop reading.
                if tx.blocking_send(Ok(Bytes::from(full))).is_err() {
                    return;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(Ok(Bytes::from(chunk)));
        }
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        let next = rx.recv().await?;
        Some((next.map(Frame::data), rx))
    });
    let mut res = Response::new(StreamBody::new(frames).boxed());
    if let Ok(v) = hyper::header::HeaderValue::from_str("application/x-ndjson") {
        res.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    res.headers_mut().insert(
        "x-content-type-options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    res
}

fn route<B>(ops: &Ops, req: &Request<B>) -> Response<Full<Bytes>> {
    if !is_read(req) {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    let now = tokio::time::Instant::now();
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ops.encode_metrics(now),
        ),
        "/healthz" => match ops.stuck(now) {
            None => reply(StatusCode::OK, "text/plain", "ok\n"),
            Some(stage) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!(
                    "stuck: the {stage} stage has work waiting and has finished nothing for {:?}\n",
                    ops.stuck_after()
                ),
            ),
        },
        "/status" => match serde_json::to_string_pretty(&ops.status(now)) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            super::page::render(&ops.status(now), &ops.last_hour()),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        res.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    // The page and JSON show file names from the inbox: never let a browser guess a type,
    // and never run or load anything (the page needs nothing but inline styles).
    let headers = res.headers_mut();
    headers.insert(
        "x-content-type-options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "content-security-policy",
        hyper::header::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Record;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ledger_is_streamed_whole_in_many_chunks_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        for i in 0..2000 {
            let mut r = Record::new("scans", &format!("f{i:05}.pdf"), Some("ab"), i, "bkt");
            ledger.put(&mut r).unwrap();
        }
        let res = ledger_lines(ledger.clone());
        assert_eq!(res.headers()["content-type"], "application/x-ndjson");
        let mut body = res.into_body();
        let mut chunks = 0;
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            if let Some(data) = frame.data_ref() {
                chunks += 1;
                text.extend_from_slice(data);
            }
        }
        assert!(chunks > 2, "{chunks} chunks");
        let got: Vec<String> = String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["rel_path"].to_string())
            .collect();
        let want: Vec<String> = ledger
            .records()
            .map(|r| format!("{:?}", r.unwrap().rel_path))
            .collect();
        assert_eq!(got.len(), 2000);
        assert_eq!(got, want);
    }
}
