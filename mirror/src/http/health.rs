//! The mirror's own endpoints, which need no login: `GET /healthz` (the process is up),
//! `GET /readyz` (the default upstream answers) and `GET /metrics`.

use crate::metrics::Metrics;
use crate::serve::body::MirrorBody;
use crate::serve::errors::plain_answer;
use crate::upstream::client::UpstreamClient;
use crate::upstream::request::own_get;
use http::{Response, StatusCode, Uri};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a readiness check's answer is reused.
const FRESH: Duration = Duration::from_secs(5);

/// `GET /healthz`: `200` while the process runs.
pub fn healthz() -> Response<MirrorBody> {
    plain_answer(StatusCode::OK, "text/plain", "ok\n".into())
}

/// `GET /metrics`: the Prometheus text exposition.
pub fn metrics(metrics: &Metrics) -> Response<MirrorBody> {
    plain_answer(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        metrics.encode(),
    )
}

/// `GET /readyz`: whether the default upstream answers `/v2/` (with anything, a `401`
/// included), asked at most every five seconds.
pub struct Readiness {
    client: UpstreamClient,
    /// The default upstream's `/v2/`.
    api_root: Uri,
    /// The last check, and when it was made.
    last: Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    /// Checks that `api_root` answers, with `client`.
    pub fn new(client: UpstreamClient, api_root: Uri) -> Readiness {
        Readiness {
            client,
            api_root,
            last: Mutex::new(None),
        }
    }

    /// `200` if the upstream answered its last check, `503` if not.
    pub async fn answer(&self) -> Response<MirrorBody> {
        match self.is_ready().await {
            true => plain_answer(StatusCode::OK, "text/plain", "ready\n".into()),
            false => plain_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "the default upstream cannot be reached\n".into(),
            ),
        }
    }

    async fn is_ready(&self) -> bool {
        if let Some((at, ready)) = *self.last.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < FRESH {
                return ready;
            }
        }
        let check = self.client.send(own_get(self.api_root.clone()));
        let ready = matches!(tokio::time::timeout(FRESH, check).await, Ok(Ok(_)));
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), ready));
        ready
    }
}
