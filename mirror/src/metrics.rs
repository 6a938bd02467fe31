//! Prometheus metrics, kept with `prometheus-client` and served at `/metrics` in the text
//! exposition format. Shared by every worker.

use crate::api::Route;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use std::fmt::Write;
use std::time::Duration;

/// What happened to a redirect the upstream sent.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Decision {
    /// Followed to storage by the mirror.
    Followed,
    /// Handed to the client.
    Passed,
    /// Refused: a downgrade, a loop, too many hops, an unusable Location.
    Refused,
}

/// What the redirect cache did for a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RedirectCacheEvent {
    /// The storage URL came from the cache.
    Hit,
    /// The storage URL was not cached: the registry was asked.
    Miss,
    /// Storage refused a cached URL: the registry was asked again.
    Refresh,
}

/// What the manifest cache did for a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ManifestEvent {
    /// Served from the cache without asking the upstream (by digest).
    Hit,
    /// Served from the cache after the upstream's `HEAD` said the tag is unchanged.
    Revalidated,
    /// Served from the cache while the upstream failed (`--serve-stale`).
    Stale,
    /// Fetched from the upstream, and kept.
    Miss,
}

/// What the blob store did: for a request (`hit`, `miss`, `fill`, `joined`), or to its
/// objects (`fill_failed`, `evicted`, `unavailable`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StoreEvent {
    /// Served from the store, nothing sent upstream for the content.
    Hit,
    /// Not in the store, and not stored by this request (not storable, or the store is
    /// unavailable): streamed from upstream as without a store.
    Miss,
    /// Not in the store: downloaded once, served while it was written to the store.
    Fill,
    /// Served from another request's download as it was written (one download per digest).
    Joined,
    /// A download that was not stored: short, interrupted, or not its digest.
    FillFailed,
    /// An object removed to keep the store within `--blob-store-max-size`.
    Evicted,
    /// The store failed (a full disk, an unreachable bucket): nothing stored or read there.
    Unavailable,
}

impl StoreEvent {
    /// Every event, in the order `/metrics` lists them.
    const ALL: [StoreEvent; 7] = [
        StoreEvent::Hit,
        StoreEvent::Miss,
        StoreEvent::Fill,
        StoreEvent::Joined,
        StoreEvent::FillFailed,
        StoreEvent::Evicted,
        StoreEvent::Unavailable,
    ];
}

/// Which kind of hop a latency is for.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Hop {
    /// The mirror's request to a registry or token service.
    Upstream,
    /// A request to storage, built by the layer.
    Storage,
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Names in lower case, as Prometheus names go, for logs and label values alike.
macro_rules! label_values {
    ($($ty:ident { $($variant:ident => $name:literal),+ $(,)? })+) => {$(
        impl $ty {
            /// Its name in logs and metrics.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )+};
}

label_values! {
    Decision { Followed => "followed", Passed => "passed", Refused => "refused" }
    RedirectCacheEvent { Hit => "hit", Miss => "miss", Refresh => "refresh" }
    ManifestEvent { Hit => "hit", Revalidated => "revalidated", Stale => "stale", Miss => "miss" }
    Joined { Blob => "blob", Manifest => "manifest", Replica => "replica" }
    Hop { Upstream => "upstream", Storage => "storage" }
    StoreEvent {
        Hit => "hit", Miss => "miss", Fill => "fill", Joined => "joined",
        FillFailed => "fill_failed", Evicted => "evicted", Unavailable => "unavailable",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    status: u16,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

/// What a request waited for another's upstream round trip for.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Joined {
    /// A blob's registry round trip (the redirect cache's single-flight).
    Blob,
    /// A manifest's fetch or revalidation.
    Manifest,
    /// Another replica's download or fetch (the shared state's lease).
    Replica,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamRequestLabels {
    method: String,
    route: Route,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HopLabel {
    hop: Hop,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the mirror keeps. Series whose labels are known in advance are created at
/// start (so they read 0 before the first event, as Prometheus advises) and kept as handles:
/// counting them is one atomic add, no label lookup.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    bytes: Family<UpstreamLabel, Counter>,
    /// By [`Decision`], in declaration order.
    redirects: [Counter; 3],
    head_fallbacks: Counter,
    /// By [`RedirectCacheEvent`], in declaration order.
    redirect_cache: [Counter; 3],
    /// By [`Hop`], in declaration order.
    hop_seconds: [Histogram; 2],
    ratelimit_remaining: Family<UpstreamLabel, Gauge>,
    digest_mismatches: Counter,
    /// By [`ManifestEvent`], in declaration order.
    manifests: [Counter; 4],
    upstream_requests: Family<UpstreamRequestLabels, Counter>,
    /// By [`Joined`], in declaration order.
    joins: [Counter; 3],
    shared_state_errors: Counter,
    shared_state_seconds: Histogram,
    /// By [`StoreEvent`], in declaration order.
    store: [Counter; 7],
    store_bytes: Gauge,
    store_objects: Gauge,
}

/// A new metric of type `M`, registered as `name` with `help`.
fn register<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// A counter family `(name, help)` with one label, `label`, whose values are known at start:
/// a handle for each of `values`, in their order.
fn series<V, const N: usize>(
    registry: &mut Registry,
    (name, help): (&str, &str),
    label: &'static str,
    values: [V; N],
) -> [Counter; N]
where
    V: EncodeLabelValue + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family: Family<[(&'static str, V); 1], Counter> = register(registry, name, help);
    values.map(|value| family.get_or_create(&[(label, value)]).clone())
}

/// The hop latency histogram, a handle by [`Hop`].
fn hop_latencies(registry: &mut Registry) -> [Histogram; 2] {
    fn latency() -> Histogram {
        // 1 ms to ~33 s.
        Histogram::new(exponential_buckets(0.001, 2.0, 16))
    }
    let family: HistogramFamily<HopLabel> = Family::new_with_constructor(latency);
    registry.register(
        "hop_seconds",
        "Time to a response head, for upstream and storage requests",
        family.clone(),
    );
    [Hop::Upstream, Hop::Storage].map(|hop| family.get_or_create(&HopLabel { hop }).clone())
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered, at 0.
    pub fn new() -> Self {
        use ManifestEvent as Manifest;
        use RedirectCacheEvent as Cache;
        let mut registry = Registry::with_prefix("registry_mirror");
        let r = &mut registry;
        let mut metrics = Metrics {
            requests: register(r, "requests", "Requests answered, by route, status and upstream"),
            bytes: register(r, "response_bytes", "Body bytes sent to clients, by upstream"),
            redirects: series(
                r,
                ("redirects", "Upstream redirects: followed to storage, passed to the client, or refused"),
                "decision",
                [Decision::Followed, Decision::Passed, Decision::Refused],
            ),
            head_fallbacks: register(r, "head_fallbacks", "HEADs answered by a real HEAD after the range probe was refused"),
            redirect_cache: series(
                r,
                ("redirect_cache", "Redirect cache hits, misses and refreshes"),
                "event",
                [Cache::Hit, Cache::Miss, Cache::Refresh],
            ),
            hop_seconds: hop_latencies(r),
            ratelimit_remaining: register(r, "upstream_ratelimit_remaining", "The upstream's ratelimit-remaining header (Docker Hub's pull limit)"),
            manifests: series(
                r,
                ("manifest_cache", "Manifest cache: served by digest, revalidated by HEAD, served stale, fetched"),
                "event",
                [Manifest::Hit, Manifest::Revalidated, Manifest::Stale, Manifest::Miss],
            ),
            upstream_requests: register(r, "upstream_requests", "Requests the mirror sent its upstreams (not storage), by method and route: Docker Hub's pull limit counts manifest GETs"),
            joins: series(
                r,
                ("single_flight_joins", "Requests that waited for another's upstream round trip instead of sending their own"),
                "kind",
                [Joined::Blob, Joined::Manifest, Joined::Replica],
            ),
            store: series(
                r,
                ("blob_store", "Blob store: hits, misses, fills, joins, failed fills, evictions, store failures"),
                "event",
                StoreEvent::ALL,
            ),
            shared_state_errors: register(r, "shared_state_errors", "Calls to the replicas' shared state (Redis) that failed or timed out"),
            // 0.1 ms to ~1.6 s: a call is bounded at 250 ms.
            shared_state_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            store_bytes: register(r, "blob_store_bytes", "Bytes of blobs and manifests in the blob store"),
            store_objects: register(r, "blob_store_objects", "Blobs and manifests in the blob store"),
            digest_mismatches: register(r, "digest_mismatches", "Blob bodies that did not match their digest (--verify-digests)"),
            registry,
        };
        let help = "Time of each call to the replicas' shared state (Redis)";
        let calls = metrics.shared_state_seconds.clone();
        metrics
            .registry
            .register("shared_state_seconds", help, calls);
        metrics
    }

    /// Counts a request answered for `route` with `status` by `upstream`.
    pub fn request(&self, route: Route, status: u16, upstream: &str) {
        let labels = RequestLabels {
            route,
            status,
            upstream: upstream.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts `n` body bytes sent to a client from `upstream`.
    pub fn bytes(&self, upstream: &str, n: u64) {
        let labels = UpstreamLabel {
            upstream: upstream.to_owned(),
        };
        self.bytes.get_or_create(&labels).inc_by(n);
    }

    /// Counts an upstream redirect, by what happened to it.
    pub fn redirect(&self, decision: Decision) {
        self.redirects[decision as usize].inc();
    }

    /// Counts a HEAD answered by a real HEAD after the range probe was refused.
    pub fn head_fallback(&self) {
        self.head_fallbacks.inc();
    }

    /// Counts what the redirect cache did.
    pub fn redirect_cache(&self, event: RedirectCacheEvent) {
        self.redirect_cache[event as usize].inc();
    }

    /// Records how long a hop took to its response head: to storage if `storage`, else
    /// upstream.
    pub fn observe_hop(&self, storage: bool, took: Duration) {
        let hop = if storage { Hop::Storage } else { Hop::Upstream };
        self.hop_seconds[hop as usize].observe(took.as_secs_f64());
    }

    /// Sets `upstream`'s last `ratelimit-remaining`.
    pub fn ratelimit_remaining(&self, upstream: &str, remaining: i64) {
        let labels = UpstreamLabel {
            upstream: upstream.to_owned(),
        };
        self.ratelimit_remaining
            .get_or_create(&labels)
            .set(remaining);
    }

    /// Counts what the manifest cache did.
    pub fn manifest(&self, event: ManifestEvent) {
        self.manifests[event as usize].inc();
    }

    /// Counts a request sent to an upstream (not storage).
    pub fn upstream_request(&self, method: &http::Method, route: Route) {
        let labels = UpstreamRequestLabels {
            method: method.as_str().to_owned(),
            route,
        };
        self.upstream_requests.get_or_create(&labels).inc();
    }

    /// Counts a request that waited for another's upstream round trip.
    pub fn joined(&self, kind: Joined) {
        self.joins[kind as usize].inc();
    }

    /// Counts what the blob store did.
    pub fn store(&self, event: StoreEvent) {
        self.store[event as usize].inc();
    }

    /// Sets what the blob store holds: `bytes` in `objects`.
    pub fn store_holds(&self, bytes: u64, objects: u64) {
        self.store_bytes.set(bytes.min(i64::MAX as u64) as i64);
        self.store_objects.set(objects.min(i64::MAX as u64) as i64);
    }

    /// Counts a call to the shared state that failed.
    pub fn shared_state_error(&self) {
        self.shared_state_errors.inc();
    }

    /// Records how long a call to the shared state took (its round trip, or its bound).
    pub fn observe_shared_state(&self, took: Duration) {
        self.shared_state_seconds.observe(took.as_secs_f64());
    }

    /// Counts a blob body whose digest did not match.
    pub fn digest_mismatch(&self) {
        self.digest_mismatches.inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
