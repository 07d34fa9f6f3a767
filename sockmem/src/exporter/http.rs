//! The exporter's HTTP/1 server (hyper): `/metrics` (built on each request: protobuf with
//! native histograms for a Prometheus that asks for it, OpenMetrics for one that asks for that,
//! else the classic text format) and `/healthz`. Connections are bounded in number and in how long their headers may take, so
//! a stuck or hostile client cannot pile up memory in a process that runs for days.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, ACCEPT, CONTENT_TYPE, VARY},
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use super::Exporter;
use crate::render::{
    metrics::{self, Format},
    metrics_proto,
};

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 64;
/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const PLAIN: &str = "text/plain; charset=utf-8";

fn with_type(mut r: Response<Full<Bytes>>, content_type: &str) -> Response<Full<Bytes>> {
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    with_type(r, content_type)
}

fn respond(exporter: &Exporter, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let mut r = metrics_response(exporter, accept);
            // The format follows the Accept header: a cache must not serve one for the other.
            r.headers_mut()
                .insert(VARY, HeaderValue::from_static("Accept"));
            r
        }
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/" => text(
            StatusCode::OK,
            PLAIN,
            "sockmem serve: /metrics (OpenMetrics, text or protobuf), /healthz\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n".into()),
    }
}

/// `/metrics` in the format `accept` asks for.
fn metrics_response(exporter: &Exporter, accept: Option<&str>) -> Response<Full<Bytes>> {
    let scrape = match exporter.scrape() {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                PLAIN,
                format!("reading the kernel's maps: {e:#}\n"),
            )
        }
    };
    let format = metrics::negotiate(accept);
    if format == Format::Protobuf {
        let body = Bytes::from(metrics_proto::encode(&scrape));
        return with_type(Response::new(Full::new(body)), metrics_proto::CONTENT_TYPE);
    }
    match metrics::encode(scrape) {
        Ok(body) if format == Format::OpenMetrics => {
            text(StatusCode::OK, metrics::CONTENT_TYPE, body)
        }
        Ok(body) => text(
            StatusCode::OK,
            metrics::CLASSIC_CONTENT_TYPE,
            metrics::classic_text(&body),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            PLAIN,
            format!("encoding the metrics: {e}\n"),
        ),
    }
}

/// Accepts and serves connections until the task is dropped.
pub async fn serve(listener: TcpListener, exporter: Arc<Exporter>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin or die.
                eprintln!("sockmem: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let exporter = exporter.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = respond(&exporter, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}
