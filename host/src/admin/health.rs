//! `/healthz` and `/readyz`: whether the process should be restarted, and whether it should be
//! sent traffic. The readiness rule is a pure function of Raft's metrics and the commit index
//! this node knows; the storage probe is the one piece of I/O.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::raft::{Member, NodeId};

/// How far this node's applied index may trail the commit index it knows and still be ready.
pub const READY_APPLY_LAG_MAX: u64 = 1_000;
/// How long a leader may go without a quorum acknowledging it and still be ready: a leader cut
/// off from the others still believes it leads, but answers no write and no linearizable read.
/// Several election timeouts, so a busy moment does not flap it.
pub const READY_LEADER_QUORUM_ACK_MS_MAX: u64 = 2_000;
/// How long one storage probe (a small write and fsync in the data dir) may take.
pub const HEALTH_PROBE_TIMEOUT_MS: u64 = 5_000;
/// A probe's result is reused for this long: probes cost an fsync, and anyone who reaches the
/// listener may ask.
pub const HEALTH_PROBE_REUSE_MS: u64 = 1_000;
/// The probe's file, in the data dir.
const PROBE_FILE: &str = "health-probe";

/// Why a node should not be sent traffic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("raft stopped: {0}")]
    Stopped(String),
    #[error("not a member of a cluster")]
    NotAMember,
    #[error("no leader known in term {term}")]
    NoLeader { term: u64 },
    #[error("leading without a quorum: none has acknowledged this leader for {millis} ms")]
    NoQuorum { millis: u64 },
    #[error("applied {applied}, {} behind the commit index {committed}", committed - applied)]
    Behind { applied: u64, committed: u64 },
}

/// Why a node should be restarted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    #[error("raft stopped: {0}")]
    Stopped(String),
    #[error("cannot write {file}: {why}")]
    NotWritable { file: String, why: String },
    #[error("no write and fsync within {HEALTH_PROBE_TIMEOUT_MS} ms")]
    Slow,
    #[error("the last probe has not finished: the disk does not answer")]
    StillProbing,
}

/// Whether this node should be sent traffic: it runs, it is a member of a cluster that has a
/// leader it follows (or is, heard by a quorum lately), and it has applied what it knows
/// committed, within a bound.
pub fn readiness(
    metrics: &openraft::RaftMetrics<NodeId, Member>,
    commit_index: u64,
) -> Result<(), NotReady> {
    if let Err(fatal) = &metrics.running_state {
        return Err(NotReady::Stopped(fatal.to_string()));
    }
    let membership = metrics.membership_config.membership();
    if membership.get_node(&metrics.id).is_none() {
        return Err(NotReady::NotAMember);
    }
    if metrics.current_leader.is_none() {
        return Err(NotReady::NoLeader { term: metrics.current_term });
    }
    if let Some(millis) = metrics.millis_since_quorum_ack
        && metrics.current_leader == Some(metrics.id)
        && millis > READY_LEADER_QUORUM_ACK_MS_MAX
    {
        return Err(NotReady::NoQuorum { millis });
    }
    let applied = metrics.last_applied.map_or(0, |id| id.index);
    if commit_index > applied + READY_APPLY_LAG_MAX {
        return Err(NotReady::Behind { applied, committed: commit_index });
    }
    Ok(())
}

/// The storage probe: its last result, kept for [`HEALTH_PROBE_REUSE_MS`], and the probe
/// still running if the last one timed out (no second one starts beside it).
#[derive(Debug, Default)]
pub struct StorageProbe {
    state: tokio::sync::Mutex<ProbeState>,
}

#[derive(Debug, Default)]
struct ProbeState {
    last: Option<(Instant, Result<(), Unhealthy>)>,
    running: Option<tokio::task::JoinHandle<Result<(), Unhealthy>>>,
}

impl StorageProbe {
    /// Whether the data dir takes a write and an fsync now (or did a moment ago).
    pub async fn check(&self, data_dir: &Path) -> Result<(), Unhealthy> {
        // One probe at a time: callers that arrive while one runs wait for its result.
        let mut state = self.state.lock().await;
        if let Some((at, result)) = &state.last
            && at.elapsed() < Duration::from_millis(HEALTH_PROBE_REUSE_MS)
        {
            return result.clone();
        }
        let probe = match state.running.take() {
            Some(running) if !running.is_finished() => {
                state.running = Some(running);
                return Err(Unhealthy::StillProbing);
            }
            Some(finished) => finished,
            None => {
                let file = data_dir.join(PROBE_FILE);
                tokio::task::spawn_blocking(move || write_probe(&file))
            }
        };
        let mut probe = probe;
        let timeout = Duration::from_millis(HEALTH_PROBE_TIMEOUT_MS);
        let result = match tokio::time::timeout(timeout, &mut probe).await {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => {
                Err(Unhealthy::NotWritable { file: PROBE_FILE.into(), why: error.to_string() })
            }
            Err(_) => {
                state.running = Some(probe);
                Err(Unhealthy::Slow)
            }
        };
        state.last = Some((Instant::now(), result.clone()));
        result
    }
}

fn write_probe(file: &Path) -> Result<(), Unhealthy> {
    let written =
        std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(file).and_then(
            |mut f| {
                f.write_all(b"ok\n")?;
                f.sync_data()
            },
        );
    written.map_err(|error| Unhealthy::NotWritable {
        file: file.display().to_string(),
        why: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use openraft::{CommittedLeaderId, LogId, Membership, RaftMetrics, StoredMembership};

    use super::*;

    fn member_of_a_cluster_led_by(
        leader: Option<NodeId>,
        applied: u64,
    ) -> RaftMetrics<NodeId, Member> {
        let mut metrics = RaftMetrics::new_initial(2);
        let nodes: BTreeMap<NodeId, Member> = (1..=3).map(|id| (id, Member::default())).collect();
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
        metrics.membership_config = Arc::new(StoredMembership::new(None, membership));
        metrics.current_leader = leader;
        metrics.current_term = 4;
        metrics.last_applied = Some(LogId::new(CommittedLeaderId::new(4, 1), applied));
        metrics
    }

    #[test]
    fn ready_with_a_leader_and_caught_up() {
        assert_eq!(readiness(&member_of_a_cluster_led_by(Some(1), 500), 500), Ok(()));
        // Behind, but within the bound.
        let behind = 500 + READY_APPLY_LAG_MAX;
        assert_eq!(readiness(&member_of_a_cluster_led_by(Some(1), 500), behind), Ok(()));
    }

    #[test]
    fn not_ready_without_a_leader_or_far_behind_or_outside_the_cluster() {
        let leaderless = readiness(&member_of_a_cluster_led_by(None, 500), 500);
        assert_eq!(leaderless, Err(NotReady::NoLeader { term: 4 }));
        let far = 501 + READY_APPLY_LAG_MAX;
        let behind = readiness(&member_of_a_cluster_led_by(Some(1), 500), far);
        assert_eq!(behind, Err(NotReady::Behind { applied: 500, committed: far }));
        let mut cut_off = member_of_a_cluster_led_by(Some(2), 500);
        cut_off.millis_since_quorum_ack = Some(READY_LEADER_QUORUM_ACK_MS_MAX + 1);
        let millis = READY_LEADER_QUORUM_ACK_MS_MAX + 1;
        assert_eq!(readiness(&cut_off, 500), Err(NotReady::NoQuorum { millis }));
        cut_off.millis_since_quorum_ack = Some(10);
        assert_eq!(readiness(&cut_off, 500), Ok(()));
        let mut stranger = member_of_a_cluster_led_by(Some(1), 500);
        stranger.id = 9;
        assert_eq!(readiness(&stranger, 500), Err(NotReady::NotAMember));
    }

    #[test]
    fn a_node_that_writes_its_probe_is_healthy() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        assert_eq!(write_probe(&dir.path().join(PROBE_FILE)), Ok(()));
        let gone = dir.path().join("missing").join(PROBE_FILE);
        let refused = write_probe(&gone);
        assert!(matches!(refused, Err(Unhealthy::NotWritable { .. })), "{refused:?}");
    }
}
