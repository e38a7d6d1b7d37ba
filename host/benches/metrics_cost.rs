//! What the metrics add to the hot path: the counting a write does (its request counted with
//! its latency, its log append and its share of an fsync observed) and a read does (its
//! request counted), timed in process, from one thread and from two at once (the node's
//! runtime has a thread per core). Compare with the node's CPU time per request (about 50 µs a
//! write and 15 µs a read on the benchmark machine).
//!
//! Run: `cargo bench -p cairn --bench metrics_cost`

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::time::{Duration, Instant};

/// Operations timed per measurement, after as many unmeasured ones.
const OPS: u32 = 1_000_000;

/// What a write's path counts: the request, the append of its entry, an fsync's observation
/// (shared by a group commit; counted whole here).
fn write_path() {
    let metrics = cairn::metrics::get();
    metrics.request("quic", "set", "ok", Duration::from_micros(250));
    metrics.log_append_seconds.observe(0.000_03);
    metrics.log_entries_written.inc_by(1);
    metrics.log_entries_pending_sync.inc_by(1);
    metrics.log_fsync_seconds.observe(0.000_15);
    metrics.log_entries_per_fsync.observe(1.0);
    metrics.log_entries_pending_sync.dec_by(1);
}

/// What a read's path counts: the request.
fn read_path() {
    cairn::metrics::get().request("quic", "get", "ok", Duration::from_micros(60));
}

fn per_op(threads: usize, op: fn()) -> f64 {
    let run = || {
        for _ in 0..OPS {
            op();
        }
    };
    run();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(run);
        }
    });
    started.elapsed().as_nanos() as f64 / f64::from(OPS)
}

fn main() {
    for (name, op) in [("write", write_path as fn()), ("read", read_path as fn())] {
        for threads in [1, 2] {
            println!(
                "{name:5} path, {threads} thread(s): {:6.0} ns per request",
                per_op(threads, op)
            );
        }
    }
}
