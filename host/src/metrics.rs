//! The node's metrics: counters and histograms the request path, the log, the state machine and
//! the recipe runtime add to as they work, and the gauges the admin listener reads off the node
//! when it is scraped. One node runs per process, so the metrics are the process's: [`get`].
//!
//! Names follow Prometheus' conventions: a `cairn_` prefix, the unit in the name, `_total` on
//! counters. Every label takes values from a closed set (request kinds, outcomes, error kinds)
//! or from a set the cluster bounds (recipe names, members), so no label grows without bound.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A count as a gauge's value (gauges are signed; no count here comes near `i64::MAX`).
pub fn gauge(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The kinds of failed recipe calls [`Metrics::recipe_call`] counts.
pub const RECIPE_ERROR_KINDS: [&str; 7] =
    ["fuel", "memory", "trap", "limit", "error", "refused", "host"];

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets: 50 µs doubling to ~13 s (19 buckets).
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 19)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// A request as the front ends count it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `quic` or `zookeeper`.
    pub frontend: &'static str,
    /// The request's kind, as the wire names it.
    pub kind: &'static str,
    /// `ok`, or the error code.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub frontend: &'static str,
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrontendLabels {
    pub frontend: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecipeLabels {
    pub recipe: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecipeErrorLabels {
    pub recipe: String,
    /// `fuel`, `memory`, `trap`, `limit`, `error` (the recipe's own), `refused` (the caller's
    /// rights, quota or session) or `host` (the node's fault).
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub member: String,
}

/// Every metric of the node. Counters and histograms move where the work is done; the gauges
/// are set from the node's state when it is scraped (`crate::admin`).
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<KindLabels, Histogram, fn() -> Histogram>,
    pub connections: Family<FrontendLabels, Gauge>,
    pub log_append_seconds: Histogram,
    pub log_fsync_seconds: Histogram,
    pub log_entries_per_fsync: Histogram,
    pub log_entries_written: Counter,
    pub log_entries_pending_sync: Gauge,
    pub snapshot_build_seconds: Histogram,
    pub snapshot_bytes: Gauge,
    pub snapshot_built_unix_seconds: Gauge,
    pub sessions_opened: Counter,
    pub sessions_expired: Counter,
    pub watch_events_sent: Counter,
    pub watch_events_dropped: Counter,
    pub recipe_calls: Family<RecipeLabels, Counter>,
    pub recipe_errors: Family<RecipeErrorLabels, Counter>,
    pub recipe_fuel: Family<RecipeLabels, Counter>,
    // Set at scrape time.
    pub raft_term: Gauge,
    pub raft_leader: Gauge,
    pub raft_is_leader: Gauge,
    pub raft_last_log_index: Gauge,
    pub raft_commit_index: Gauge,
    pub raft_applied_index: Gauge,
    pub raft_member_match_index: Family<MemberLabels, Gauge>,
    pub raft_member_lag: Family<MemberLabels, Gauge>,
    pub raft_members: Gauge,
    pub snapshot_index: Gauge,
    pub sessions: Gauge,
    pub watches: Gauge,
    pub znodes: Gauge,
    pub znode_data_bytes: Gauge,
    pub recipes_deployed: Gauge,
    pub peer_rtt_seconds: Family<MemberLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub uptime_seconds: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let metrics = Metrics {
            registry: Registry::with_prefix("cairn"),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            connections: Family::default(),
            log_append_seconds: latency_histogram(),
            log_fsync_seconds: latency_histogram(),
            log_entries_per_fsync: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            log_entries_written: Counter::default(),
            log_entries_pending_sync: Gauge::default(),
            snapshot_build_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            snapshot_bytes: Gauge::default(),
            snapshot_built_unix_seconds: Gauge::default(),
            sessions_opened: Counter::default(),
            sessions_expired: Counter::default(),
            watch_events_sent: Counter::default(),
            watch_events_dropped: Counter::default(),
            recipe_calls: Family::default(),
            recipe_errors: Family::default(),
            recipe_fuel: Family::default(),
            raft_term: Gauge::default(),
            raft_leader: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_member_match_index: Family::default(),
            raft_member_lag: Family::default(),
            raft_members: Gauge::default(),
            snapshot_index: Gauge::default(),
            sessions: Gauge::default(),
            watches: Gauge::default(),
            znodes: Gauge::default(),
            znode_data_bytes: Gauge::default(),
            recipes_deployed: Gauge::default(),
            peer_rtt_seconds: Family::default(),
            uptime_seconds: Gauge::default(),
        };
        metrics.registered()
    }

    fn registered(mut self) -> Metrics {
        // Known label values start at zero, so a rate over them starts at once.
        for frontend in ["quic", "zookeeper"] {
            self.connections.get_or_create_owned(&FrontendLabels { frontend });
        }
        let r = &mut self.registry;
        r.register(
            "requests",
            "Requests answered, by front end, kind and outcome",
            self.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its answer",
            Unit::Seconds,
            self.request_seconds.clone(),
        );
        r.register(
            "connections",
            "Client connections open, by front end",
            self.connections.clone(),
        );
        r.register_with_unit(
            "log_append_duration",
            "Time to write a batch of log entries, before its fsync",
            Unit::Seconds,
            self.log_append_seconds.clone(),
        );
        r.register_with_unit(
            "log_fsync_duration",
            "Time of one fsync of the log (group commit)",
            Unit::Seconds,
            self.log_fsync_seconds.clone(),
        );
        r.register(
            "log_entries_per_fsync",
            "Log entries made durable by one fsync",
            self.log_entries_per_fsync.clone(),
        );
        r.register("log_entries_written", "Log entries written", self.log_entries_written.clone());
        r.register(
            "log_entries_pending_sync",
            "Log entries written and waiting for their fsync",
            self.log_entries_pending_sync.clone(),
        );
        r.register_with_unit(
            "snapshot_build_duration",
            "Time to build and write a snapshot",
            Unit::Seconds,
            self.snapshot_build_seconds.clone(),
        );
        r.register_with_unit(
            "snapshot_size",
            "Size of the latest snapshot built or installed",
            Unit::Bytes,
            self.snapshot_bytes.clone(),
        );
        r.register_with_unit(
            "snapshot_built_timestamp",
            "When the latest snapshot was built or installed (Unix time)",
            Unit::Seconds,
            self.snapshot_built_unix_seconds.clone(),
        );
        r.register(
            "snapshot_index",
            "Log index the latest snapshot covers",
            self.snapshot_index.clone(),
        );
        r.register(
            "sessions_opened",
            "Sessions opened (applied on this node)",
            self.sessions_opened.clone(),
        );
        r.register(
            "sessions_expired",
            "Sessions expired (applied on this node)",
            self.sessions_expired.clone(),
        );
        r.register("sessions", "Sessions open", self.sessions.clone());
        r.register("watches", "Watches registered on this node", self.watches.clone());
        r.register(
            "watch_events_sent",
            "Watch events queued to clients",
            self.watch_events_sent.clone(),
        );
        r.register(
            "watch_events_dropped",
            "Watch events dropped because a client did not read them (it is told to resync)",
            self.watch_events_dropped.clone(),
        );
        r.register("znodes", "Znodes in the tree", self.znodes.clone());
        r.register_with_unit(
            "znode_data",
            "Bytes of znode paths, data and ACLs in the tree",
            Unit::Bytes,
            self.znode_data_bytes.clone(),
        );
        r.register("recipe_calls", "Recipe calls run, by recipe", self.recipe_calls.clone());
        r.register(
            "recipe_errors",
            "Recipe calls that failed, by recipe and kind",
            self.recipe_errors.clone(),
        );
        r.register(
            "recipe_fuel_used",
            "Wasm fuel recipe calls used, by recipe",
            self.recipe_fuel.clone(),
        );
        r.register("recipes_deployed", "Recipe versions deployed", self.recipes_deployed.clone());
        r.register("raft_term", "Current Raft term", self.raft_term.clone());
        r.register(
            "raft_leader",
            "Node id of the leader this node knows (0: none)",
            self.raft_leader.clone(),
        );
        r.register("raft_is_leader", "1 if this node leads", self.raft_is_leader.clone());
        r.register(
            "raft_last_log_index",
            "Index of the last entry in this node's log",
            self.raft_last_log_index.clone(),
        );
        r.register(
            "raft_commit_index",
            "Highest log index this node knows committed",
            self.raft_commit_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "Highest log index applied to this node's state",
            self.raft_applied_index.clone(),
        );
        r.register(
            "raft_members",
            "Members of the cluster (voters and learners)",
            self.raft_members.clone(),
        );
        r.register(
            "raft_member_match_index",
            "Each member's last log index the leader knows it holds (leader only)",
            self.raft_member_match_index.clone(),
        );
        r.register(
            "raft_member_lag_entries",
            "How many entries each member is behind the leader's log (leader only)",
            self.raft_member_lag.clone(),
        );
        r.register_with_unit(
            "peer_rtt",
            "Round-trip time of the QUIC connection to each peer",
            Unit::Seconds,
            self.peer_rtt_seconds.clone(),
        );
        r.register_with_unit(
            "uptime",
            "Time since the node started",
            Unit::Seconds,
            self.uptime_seconds.clone(),
        );
        self
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts one answered request.
    pub fn request(
        &self,
        frontend: &'static str,
        kind: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.requests.get_or_create(&RequestLabels { frontend, kind, outcome }).inc();
        self.request_seconds
            .get_or_create(&KindLabels { frontend, kind })
            .observe(took.as_secs_f64());
    }

    /// Counts a call of recipe `recipe`, the fuel it used and, if it failed, how.
    pub fn recipe_call(&self, recipe: &str, fuel: u64, failed: Option<cairn_wire::ErrorCode>) {
        use cairn_wire::ErrorCode;
        let labels = RecipeLabels { recipe: recipe.to_string() };
        self.recipe_calls.get_or_create(&labels).inc();
        self.recipe_fuel.get_or_create(&labels).inc_by(fuel);
        let Some(code) = failed else { return };
        let kind = match code {
            ErrorCode::OutOfFuel => "fuel",
            ErrorCode::OutOfMemory => "memory",
            ErrorCode::RecipeTrap => "trap",
            ErrorCode::RecipeLimit => "limit",
            ErrorCode::RecipeError => "error",
            ErrorCode::Internal => "host",
            // The caller's rights, quota or session refused one of the call's writes.
            _ => "refused",
        };
        self.recipe_errors.get_or_create(&RecipeErrorLabels { recipe: labels.recipe, kind }).inc();
    }

    /// One more (`open`) or one fewer client connection.
    pub fn connection(&self, frontend: &'static str, open: bool) {
        let gauge = self.connections.get_or_create_owned(&FrontendLabels { frontend });
        if open {
            gauge.inc();
        } else {
            gauge.dec();
        }
    }
}

/// Counts a client connection while it is held.
#[derive(Debug)]
pub struct ConnectionGauge(&'static str);

impl ConnectionGauge {
    pub fn open(frontend: &'static str) -> ConnectionGauge {
        get().connection(frontend, true);
        ConnectionGauge(frontend)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        get().connection(self.0, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_encoded_with_their_suffixes_and_labels() {
        let metrics = Metrics::new();
        metrics.request("quic", "create", "ok", Duration::from_micros(300));
        metrics
            .recipe_errors
            .get_or_create(&RecipeErrorLabels { recipe: "fair-lock".into(), kind: "fuel" })
            .inc();
        let text = metrics.encode();
        assert!(
            text.contains(r#"cairn_requests_total{frontend="quic",kind="create",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"cairn_request_duration_seconds_count{frontend="quic",kind="create"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"cairn_recipe_errors_total{recipe="fair-lock",kind="fuel"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
