//! The `/metrics` endpoint both daemons serve to Prometheus
//! (`docs/metrics.md`): a [`prometheus_client`] registry rendered on each
//! scrape, over a small HTTP/1 server (hyper).
//!
//! The server answers `GET /metrics` (and `HEAD`) only: any other path is
//! 404, any other method 405. It is bounded like every listener here: at
//! most [`MAX_CONNECTIONS`] at once (more wait in the listen backlog), the
//! request head must arrive within [`HEAD_TIMEOUT`] and be at most
//! hyper's minimum buffer (8 KiB), a whole connection lasts at most
//! [`CONNECTION_DEADLINE`], and every answer closes its connection (no
//! keep-alive to hold slots between scrapes). Request bodies are never
//! read.
//!
//! The format follows the scraper's `Accept` header, as Prometheus's own
//! servers do: OpenMetrics 1.0 when it asks for
//! `application/openmetrics-text`, the Prometheus text format 0.0.4
//! otherwise (what `curl` and `promtool check metrics` read). Counters are
//! registered without their `_total` suffix: the encoder adds it.
//!
//! Where it listens is the caller's decision; each daemon's configuration
//! keeps it on loopback (the supervisor refuses anything else).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 4;
/// Longest wait for a request's head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection, request and answer included.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// The one path served.
pub const METRICS_PATH: &str = "/metrics";

/// The `Content-Type` of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which exposition format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (ends with `# EOF`).
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    PrometheusText,
}

impl Format {
    /// The format a request's `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::PrometheusText,
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::PrometheusText => PROMETHEUS_TEXT_CONTENT_TYPE,
        }
    }
}

/// Renders `registry` in `format`.
pub fn render(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(8 * 1024);
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, registry)?,
        Format::PrometheusText => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?
        }
    }
    Ok(text)
}

/// Why the metrics endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {address} for metrics: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound metrics endpoint, not yet serving.
pub struct MetricsServer {
    listener: TcpListener,
    registry: Arc<Registry>,
}

impl MetricsServer {
    /// Binds `address` (port 0 picks a free port). Must be called inside a
    /// Tokio runtime.
    pub async fn bind(
        address: SocketAddr,
        registry: Arc<Registry>,
    ) -> Result<MetricsServer, MetricsServerError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| MetricsServerError::Bind { address, source })?;
        Ok(MetricsServer { listener, registry })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: CancellationToken) {
        let MetricsServer { listener, registry } = self;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut shutdown = std::pin::pin!(shutdown.cancelled_owned());
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => return,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let stream = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "metrics endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let registry = Arc::clone(&registry);
                    async move { Ok::<_, Infallible>(answer(&request, &registry)) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .max_buf_size(8192)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "metrics endpoint: connection failed")
                    }
                    Err(_) => tracing::debug!("metrics endpoint: connection over its deadline"),
                }
                drop(permit);
            });
        }
    }
}

/// The answer to one request.
fn answer(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if request.uri().path() != METRICS_PATH {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        response
            .headers_mut()
            .insert("allow", HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let format = Format::from_accept(
        request
            .headers()
            .get(ACCEPT)
            .and_then(|value| value.to_str().ok()),
    );
    match render(registry, format) {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            response
        }
        Err(_) => {
            tracing::error!("metrics endpoint: rendering the metrics failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the metrics failed\n",
            )
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// One sample of a metric family: its labels and value.
pub type Sample<V> = (Vec<(&'static str, String)>, V);

/// Writes a gauge family named `name` (its whole name, units included)
/// with `samples` from a [`prometheus_client::collector::Collector`]. An
/// empty family is written as its `HELP` and `TYPE` only.
pub fn encode_gauge<V>(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[Sample<V>],
) -> Result<(), std::fmt::Error>
where
    V: prometheus_client::encoding::EncodeGaugeValue + Copy + std::fmt::Debug,
{
    use prometheus_client::encoding::EncodeMetric;
    use prometheus_client::metrics::MetricType;
    use prometheus_client::metrics::gauge::ConstGauge;
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// Writes a counter family: `name` without the `_total` suffix, which the
/// encoder appends to every sample.
pub fn encode_counter(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[Sample<u64>],
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    use prometheus_client::metrics::MetricType;
    use prometheus_client::metrics::counter::ConstCounter;
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_gauge(
                &mut encoder,
                "demo_up",
                "Whether it is up.",
                &[(vec![], 1), (vec![("who", "a\"b".to_string())], 0)],
            )?;
            encode_counter(
                &mut encoder,
                "demo_events",
                "Events seen.",
                &[(vec![("kind", "x".to_string())], 7)],
            )
        }
    }

    fn registry() -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        registry
    }

    #[test]
    fn both_formats_carry_the_samples_with_total_added_to_counters() {
        let text = render(&registry(), Format::PrometheusText).unwrap();
        assert!(text.contains("# TYPE demo_up gauge\n"), "{text}");
        assert!(text.contains("\ndemo_up 1\n"), "{text}");
        assert!(text.contains("demo_up{who=\"a\\\"b\"} 0\n"), "{text}");
        assert!(text.contains("demo_events_total{kind=\"x\"} 7\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        let open = render(&registry(), Format::OpenMetrics).unwrap();
        assert!(open.contains("# TYPE demo_events counter\n"), "{open}");
        assert!(open.contains("demo_events_total{kind=\"x\"} 7\n"), "{open}");
        assert!(open.ends_with("# EOF\n"), "{open}");
    }

    #[test]
    fn the_accept_header_picks_the_format() {
        assert_eq!(Format::from_accept(None), Format::PrometheusText);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
            Format::PrometheusText
        );
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
    }

    /// One raw HTTP/1.0 exchange with the server.
    async fn exchange(address: SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        answer
    }

    #[tokio::test]
    async fn serves_metrics_only_at_its_path_and_only_for_get() {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), Arc::new(registry()))
            .await
            .unwrap();
        let address = server.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.serve(shutdown.clone()));

        let ok = exchange(address, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("demo_events_total{kind=\"x\"} 7"), "{ok}");
        let open = exchange(
            address,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        )
        .await;
        assert!(open.contains("application/openmetrics-text"), "{open}");
        assert!(open.ends_with("# EOF\n"), "{open}");
        let missing = exchange(address, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = exchange(
            address,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        // A head larger than the buffer is refused, not buffered.
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let refused = exchange(address, &huge).await;
        assert!(
            refused.is_empty() || refused.starts_with("HTTP/1.1 431"),
            "{refused}"
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
