//! What one recipe invocation adds to applying a log entry: the apply of a plain `set` beside
//! the apply of recipe invocations (instantiate, run, commit), measured in process on the
//! node's own `DataTree` and `RecipeRuntime`, with no network and no log in the way. Apply runs
//! in a task of a multi-threaded async runtime, as in the node.
//!
//! Run: `cargo bench -p cairn --bench recipe_apply`

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::time::{Duration, Instant};

use cairn::recipe::RecipeRuntime;
use cairn::recipe::builtin::BUILTIN_RECIPES;
use cairn::store::{Action, Command, DataTree, Effects, Principal, SessionId, Write, Zxid};
use cairn_wire::{CreateRequest, Reply, SetRequest};

/// Calls measured per workload, after as many unmeasured ones to warm up.
const CALLS: usize = 5_000;

struct Bench {
    tree: DataTree,
    runtime: RecipeRuntime,
    zxid: u64,
}

impl Bench {
    fn apply(&mut self, session: Option<u64>, action: Action) -> Reply {
        self.zxid += 1;
        let write = Write { session: session.map(SessionId), principal: Principal::System, action };
        let mut effects = Effects::default();
        let time_ms = 1_700_000_000_000 + self.zxid;
        let command = Command { time_ms, writes: vec![write] };
        match self.tree.apply_command(Zxid(self.zxid), &command, &mut effects, &self.runtime) {
            Ok(mut replies) => match replies.pop() {
                Some(Ok(reply)) => reply,
                Some(Err(error)) => panic!("{:?} failed: {error}", command.writes[0].action),
                None => panic!("no reply"),
            },
            Err(fault) => panic!("{fault}"),
        }
    }

    fn invoke(recipe: &str, op: &str, args: &str) -> Action {
        Action::InvokeRecipe {
            name: recipe.into(),
            version: None,
            op: op.into(),
            args: args.as_bytes().to_vec(),
        }
    }

    /// Applies `action` (from `session`) `CALLS` times after a warm-up, with `between` applied
    /// unmeasured after each; returns the measured times.
    fn measure(
        &mut self,
        session: Option<u64>,
        action: &Action,
        between: Option<&Action>,
    ) -> Vec<Duration> {
        let mut times = Vec::with_capacity(CALLS);
        for call in 0..2 * CALLS {
            let started = Instant::now();
            self.apply(session, action.clone());
            if call >= CALLS {
                times.push(started.elapsed());
            }
            if let Some(between) = between {
                self.apply(session, between.clone());
            }
        }
        times
    }
}

fn report(what: &str, mut times: Vec<Duration>, baseline: Option<Duration>) -> Duration {
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let added =
        baseline.map(|b| format!("  (+{:>6.1} µs over set)", micros(mean.saturating_sub(b))));
    println!(
        "{what:<34} mean {:>7.1} µs  p50 {:>7.1} µs  p99 {:>7.1} µs{}",
        micros(mean),
        micros(at(0.5)),
        micros(at(0.99)),
        added.unwrap_or_default()
    );
    mean
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().build().expect("async runtime");
    runtime.block_on(async { tokio::spawn(async { run() }).await.expect("the bench ran") });
}

fn run() {
    let mut bench =
        Bench { tree: DataTree::new(), runtime: RecipeRuntime::new().expect("engine"), zxid: 0 };
    for (name, component) in BUILTIN_RECIPES {
        let deploy = Action::DeployRecipe {
            name: name.to_string(),
            version: None,
            component: component.to_vec(),
            runtime: cairn::recipe::RUNTIME_VERSION.to_string(),
            owner: None,
        };
        bench.apply(None, deploy);
    }
    let Reply::Session { session_id, .. } = bench.apply(
        None,
        Action::OpenSession { timeout_ms: 10_000, secret_hash: cairn::store::SecretHash::of(1) },
    ) else {
        panic!("no session");
    };
    let create = CreateRequest {
        path: "/plain".into(),
        data: Vec::new(),
        null_data: false,
        mode: Default::default(),
        sequential: false,
        ttl_ms: None,
        acl: None,
    };
    bench.apply(None, Action::Create(create));

    println!("apply of one write, {CALLS} calls each (after {CALLS} to warm up):");
    let set = Action::Set(SetRequest {
        path: "/plain".into(),
        data: b"0123456789".to_vec(),
        null_data: false,
        version: None,
    });
    let baseline = report("set (no recipe)", bench.measure(Some(session_id), &set, None), None);
    let add = Bench::invoke("counter", "add", r#"{"name":"hits","delta":1}"#);
    report("counter add", bench.measure(Some(session_id), &add, None), Some(baseline));
    let acquire = Bench::invoke("fair-lock", "acquire", r#"{"lock":"l"}"#);
    let release = Bench::invoke("fair-lock", "release", r#"{"lock":"l"}"#);
    report(
        "fair-lock acquire (free lock)",
        bench.measure(Some(session_id), &acquire, Some(&release)),
        Some(baseline),
    );
    bench.apply(Some(session_id), acquire.clone());
    report(
        "fair-lock release (last hold)",
        bench.measure(Some(session_id), &release, Some(&acquire)),
        Some(baseline),
    );
}
