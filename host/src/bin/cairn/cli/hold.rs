//! Commands that run a program while holding something: a lock, a leadership, permits, a
//! read-write lock, a place in a barrier. The program is stopped if the hold is lost.

use super::*;

/// What the commands that run a command while holding something share.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Give up when it is not granted within this long: 500ms, 10s, 2m.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The command to run, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name.
    pub name: String,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The election's name.
    pub name: String,
    /// This candidate's id, shown to others as the leader's data (default: the session id).
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct SemArgs {
    /// The semaphore's name.
    pub name: String,
    /// How many permits the semaphore has (fixed by its first user).
    #[arg(long)]
    pub permits: u64,
    /// How many permits to take.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
#[group(id = "access", required = true, multiple = false)]
pub struct RwlockArgs {
    /// The lock's name.
    pub name: String,
    /// Share the lock with other readers.
    #[arg(long, group = "access")]
    pub read: bool,
    /// Hold the lock alone.
    #[arg(long, group = "access")]
    pub write: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct BarrierArgs {
    /// The barrier's name.
    pub name: String,
    /// How many members the barrier waits for (fixed by its first user).
    #[arg(long)]
    pub count: u32,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs a command holding a lock; stops it if the session can no longer prove the lock is held.
pub(super) async fn run_locked(client: &Client, args: LockArgs) -> anyhow::Result<ExitCode> {
    let lock = client.lock(&args.name);
    let guard = within(args.run.timeout, &format!("lock {}", args.name), lock.acquire()).await?;
    let env = [("CAIRN_FENCING_TOKEN", guard.token().to_string())];
    let status = run_holding(client, &format!("lock {}", args.name), &env, &args.run.command).await;
    guard.release().await?;
    exit_code(status?)
}

/// Runs a command while this session leads an election.
pub(super) async fn run_elected(client: &Client, args: ElectArgs) -> anyhow::Result<ExitCode> {
    let id = args.id.clone().unwrap_or_else(|| format!("session-{:#x}", client.session_id()));
    let election = client.election(&args.name);
    let what = format!("leadership of {}", args.name);
    let leadership = within(args.run.timeout, &what, election.campaign(&id)).await?;
    let env = [("CAIRN_FENCING_TOKEN", leadership.term().to_string()), ("CAIRN_LEADER_ID", id)];
    let status = run_holding(client, &what, &env, &args.run.command).await;
    leadership.resign().await?;
    exit_code(status?)
}

/// Runs a command holding semaphore permits.
pub(super) async fn run_with_permits(client: &Client, args: SemArgs) -> anyhow::Result<ExitCode> {
    let semaphore = client.semaphore(&args.name, args.permits);
    let what = format!("{} permit(s) of {}", args.count, args.name);
    let permits = within(args.run.timeout, &what, semaphore.acquire(args.count)).await?;
    let status = run_holding(client, &what, &[], &args.run.command).await;
    permits.release().await?;
    exit_code(status?)
}

/// Runs a command holding a read-write lock.
pub(super) async fn run_rw_locked(client: &Client, args: RwlockArgs) -> anyhow::Result<ExitCode> {
    let lock = client.rw_lock(&args.name);
    let what = format!("{} lock {}", if args.write { "write" } else { "read" }, args.name);
    let guard = if args.write {
        within(args.run.timeout, &what, lock.write()).await?
    } else {
        within(args.run.timeout, &what, lock.read()).await?
    };
    let env = [("CAIRN_FENCING_TOKEN", guard.token().to_string())];
    let status = run_holding(client, &what, &env, &args.run.command).await;
    guard.release().await?;
    exit_code(status?)
}

/// Runs a command inside a double barrier: after all have entered; leaves and waits for the
/// others to finish.
pub(super) async fn run_in_barrier(client: &Client, args: BarrierArgs) -> anyhow::Result<ExitCode> {
    let barrier = client.barrier(&args.name, args.count);
    let what = format!("barrier {} of {}", args.name, args.count);
    let round = within(args.run.timeout, &what, barrier.enter()).await?;
    let env = [("CAIRN_BARRIER_ROUND", round.round().to_string())];
    let status = run_holding(client, &what, &env, &args.run.command).await;
    round.leave().await?;
    exit_code(status?)
}

pub(super) async fn within<T>(
    limit: Option<Duration>,
    what: &str,
    wait: impl Future<Output = Result<T, cairn_client::Error>>,
) -> anyhow::Result<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, wait)
            .await
            .map_err(|_| anyhow::anyhow!("{what} not granted within {limit:?}"))?
            .map_err(Into::into),
        None => Ok(wait.await?),
    }
}

/// Runs `command` with `env` while the session lasts; kills it as soon as the session is
/// suspended or ends (what it holds can no longer be proven), or on SIGINT/SIGTERM.
pub(super) async fn run_holding(
    client: &Client,
    what: &str,
    env: &[(&str, String)],
    command: &[String],
) -> anyhow::Result<std::process::ExitStatus> {
    let (program, program_args) = command.split_first().context("no command to run")?;
    let mut child = tokio::process::Command::new(program)
        .args(program_args)
        .envs(env.iter().map(|(key, value)| (*key, value)))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let mut state = client.session_state();
    let lost = |state: &SessionState| {
        !matches!(state, SessionState::Connected | SessionState::Reconnected)
    };
    tokio::select! {
        status = child.wait() => Ok(status?),
        now = state.wait_for(lost) => {
            let now = now.map(|state| *state).unwrap_or(SessionState::Closed);
            let _ = child.kill().await;
            anyhow::bail!("{what} lost (session {now:?}): stopped {program}")
        }
        signal = shutdown_signal() => {
            let _ = child.kill().await;
            anyhow::bail!("interrupted by {signal}: stopped {program}")
        }
    }
}

/// The command's exit status as ours; a command killed by a signal has no code: failure.
pub(super) fn exit_code(status: std::process::ExitStatus) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::from(status.code().map_or(1, |code| u8::try_from(code).unwrap_or(1))))
}
