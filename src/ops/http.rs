//! The operations listener (`[http] listen`): a small HTTP/1 server on hyper, read-only.
//!
//! - `GET /metrics`: Prometheus (OpenMetrics text)
//! - `GET /healthz`: 200 while the pipeline moves (also during an S3 outage), 503 when a
//!   stage is stuck
//! - `GET /status`: JSON for scripts and `inboxd status`
//! - `GET /`: a status page that refreshes itself

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Ops;

/// Binds the listener (an error here stops the start: the address is taken or not allowed).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `stop`. Each connection is served in a task of its own; a client that
/// misbehaves only loses its own connection.
pub async fn serve(listener: TcpListener, ops: Arc<Ops>, stop: CancellationToken) {
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
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let ops = ops.clone();
                async move { Ok::<_, Infallible>(route(&ops, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route<B>(ops: &Ops, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
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
