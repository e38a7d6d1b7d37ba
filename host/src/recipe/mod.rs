//! The recipe runtime: wasmtime components of the `cairn:recipe` world, run inside `apply`.
//!
//! Request path: `store::apply` meets an invoke entry and calls [`RecipeRuntime::invoke`]
//! (through `store::recipes::RecipeRunner`). The runtime takes the tree into a wasmtime store
//! for the duration of the call, instantiates the component from its pre-instantiated form
//! (compiled once per node per content hash, instances from the pooling allocator) or takes the
//! instance an earlier call of the same log entry left (see `Live`), gives the call a fixed fuel
//! budget (the instance a memory limit), and lets it read and write its own namespace through a
//! `store::recipes::RecipeTxn`. On success the writes commit; on an error, a trap, running out
//! of fuel or memory, they are all undone. Nothing a recipe can call differs between replicas:
//! no clock but the entry's timestamp, no randomness but a fixed seed, no files or sockets.

pub mod builtin;
mod host;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use cairn_wire::{ApiError, ErrorCode};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    StoreContextMut, Trap,
};
use wasmtime_wasi::p2::{Pollable, subscribe};
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};

use crate::store::paths::namespace;
use crate::store::recipes::{CompileError, Entry, RecipeCall, RecipeRunner, RecipeTxn};
use crate::store::{DataTree, Effects, Notification, Zxid};

wasmtime::component::bindgen!({
    world: "recipe",
    path: "../wit",
});

/// Instructions (fuel units) one invocation may run.
pub const RECIPE_FUEL_PER_CALL: u64 = 100_000_000;
/// Linear memory one invocation may grow to, in bytes.
pub const RECIPE_MEMORY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Table elements one invocation may grow to.
pub const RECIPE_TABLE_ELEMENTS_MAX: usize = 100_000;
/// Linear memory kept mapped between calls, reset with `memset` rather than given back to the
/// kernel and faulted in again: covers what a typical call touches (stack, data, some heap).
pub const RECIPE_MEMORY_KEEP_RESIDENT_BYTES: usize = 512 * 1024;
/// Component instances the pooling allocator keeps room for at once.
pub const RECIPE_INSTANCES_MAX: u32 = 8;
/// Compiled components kept in memory per node.
pub const RECIPE_COMPILED_CACHE_MAX: usize = 64;
/// Compiled component files kept in the compiled directory; the oldest go first.
pub const RECIPE_COMPILED_FILES_MAX: usize = 64;
/// Bytes of the signature that opens a compiled file.
const COMPILED_TAG_BYTES: usize = 32;
/// Calls one instance may serve within one log entry before a fresh one is made.
pub const RECIPE_INSTANCE_CALLS_MAX: u32 = 256;
/// Instances kept for the rest of a log entry at once (fewer than the pool's room, so a new
/// instance always finds a slot).
pub const RECIPE_LIVE_INSTANCES_MAX: usize = 4;
/// Stack of the thread a component runs on, in bytes.
pub const RECIPE_THREAD_STACK_BYTES: usize = 8 * 1024 * 1024;
/// Notifications one invocation may send; more are dropped.
pub const RECIPE_NOTIFICATIONS_PER_CALL_MAX: usize = 1_024;
/// Longest message a notification may carry, in bytes; a longer one is dropped.
pub const RECIPE_NOTIFICATION_BYTES_MAX: usize = 4 * 1024;
/// Znodes one invocation may create.
pub const RECIPE_ZNODES_CREATED_PER_CALL_MAX: u32 = 1_000;
/// Bytes of paths and data one invocation may write (create and set).
pub const RECIPE_BYTES_WRITTEN_PER_CALL_MAX: u64 = 4 * 1024 * 1024;
/// Bytes one invocation may move through host calls, both ways (what it reads, writes, lists
/// and sends): the host's work on its behalf, which fuel does not count.
pub const RECIPE_BYTES_MOVED_PER_CALL_MAX: u64 = 64 * 1024 * 1024;
/// Host calls one invocation may make.
pub const RECIPE_HOST_CALLS_PER_CALL_MAX: u64 = 100_000;
/// Names the engine and its fuel accounting; recorded in the replicated state at the first
/// deploy, and a node running another refuses to apply recipe entries.
pub const RUNTIME_VERSION: &str = "wasmtime-48.0.8/fuel-1/waits-at-once";

/// Compiles, caches and runs recipe components.
pub struct RecipeRuntime {
    engine: Engine,
    linker: Linker<CallState>,
    /// Pre-instantiated components by content hash.
    compiled: Mutex<HashMap<String, RecipePre<CallState>>>,
    /// Where compiled components are kept between starts, if anywhere, and the node's key
    /// that signs them: see [`RecipeRuntime::with_compiled_dir`].
    compiled_dir: Option<(PathBuf, CompiledKey)>,
    /// The thread components run on, started at the first call.
    worker: Mutex<Option<mpsc::Sender<Job>>>,
    /// Instances kept for the other calls of the log entry being applied (its zxid), by
    /// `name@version`: see [`Live`].
    live: Mutex<Option<(Zxid, HashMap<String, Live>)>>,
}

/// An instance that served a call of the entry being applied and may serve its next calls of
/// the same recipe: instantiating costs about as much as a simple call. Reuse never crosses a
/// log entry, so every replica (and one restored from a snapshot, which starts at an entry's
/// end) runs each call in an instance with the same history. A trap, running out of fuel or
/// memory, or [`RECIPE_INSTANCE_CALLS_MAX`] calls retire it.
struct Live {
    store: Store<CallState>,
    recipe: Recipe,
    calls: u32,
}

/// A call handed to the worker thread.
type Job = Box<dyn FnOnce() + Send>;

/// Which export a call runs, with everything it needs owned, to cross to the worker thread.
enum OwnedEntry {
    Invoke { op: String, args: Vec<u8> },
    SessionEnded { session: u64, deleted: Vec<String> },
}

impl std::fmt::Debug for RecipeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecipeRuntime").finish_non_exhaustive()
    }
}

/// The tree and the invocation's writes, shared between the thread that runs the component and
/// the apply that called it, so that neither is lost if the run panics.
struct Shared {
    tree: DataTree,
    txn: Option<RecipeTxn>,
}

/// What one call brings: the tree and its transaction, and who calls in which entry.
struct Call {
    shared: Arc<Mutex<Shared>>,
    /// `name@version`, what notifications are signed with.
    recipe: String,
    namespace: String,
    session: u64,
    zxid: Zxid,
    time_ms: u64,
}

impl Call {
    /// The state of a new instance for this call: its WASI context serves the entry's time.
    fn into_state(self) -> CallState {
        let wasi = WasiCtxBuilder::new()
            .insecure_random_seed(0)
            .insecure_random(Deterministic::new(vec![0x5a; 32]))
            .secure_random(Deterministic::new(vec![0xa5; 32]))
            .wall_clock(EntryClock(self.time_ms))
            .monotonic_clock(EntryClock(self.time_ms))
            .build();
        CallState {
            shared: self.shared,
            recipe: self.recipe,
            namespace: self.namespace,
            session: self.session,
            zxid: self.zxid,
            time_ms: self.time_ms,
            notifications: Vec::new(),
            memory_refused: false,
            budget: CallBudget::default(),
            wasi,
            table: ResourceTable::new(),
        }
    }
}

/// Everything an invocation's host calls reach.
pub(crate) struct CallState {
    shared: Arc<Mutex<Shared>>,
    /// `name@version` of the recipe this instance runs.
    recipe: String,
    namespace: String,
    session: u64,
    zxid: Zxid,
    time_ms: u64,
    notifications: Vec<Notification>,
    /// Set when the recipe asked for more memory than allowed, to tell that trap apart.
    memory_refused: bool,
    /// What the call's host calls have used of their bounds.
    budget: CallBudget,
    wasi: WasiCtx,
    table: ResourceTable,
}

/// What one invocation's host calls have used, against the `RECIPE_*_PER_CALL_MAX` bounds.
/// Counted exactly, so every replica stops a call at the same host call.
#[derive(Debug, Default)]
struct CallBudget {
    host_calls: u64,
    bytes_moved: u64,
    bytes_written: u64,
    znodes_created: u32,
    /// The first bound passed: the call ends with `recipe-limit`.
    exceeded: Option<String>,
    /// The first write refused for the caller's rights, quota or missing session (`no-auth`,
    /// `quota-exceeded`, `no-session`): the call ends with it, whatever the recipe makes of it,
    /// so the caller hears why.
    refused: Option<ApiError>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > RECIPE_MEMORY_BYTES_MAX {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= RECIPE_TABLE_ELEMENTS_MAX)
    }
}

/// The only clock a recipe sees: the entry's leader timestamp, standing still.
struct EntryClock(u64);

impl HostWallClock for EntryClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl HostMonotonicClock for EntryClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.0.saturating_mul(1_000_000)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the recipe runtime: {0}")]
pub struct RuntimeError(String);

/// The node's secret key that signs the compiled components it keeps on disk.
#[derive(Clone)]
pub struct CompiledKey([u8; 32]);

impl std::fmt::Debug for CompiledKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompiledKey(..)")
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl CompiledKey {
    pub fn new(bytes: [u8; 32]) -> CompiledKey {
        CompiledKey(bytes)
    }

    /// The key kept in `file` (0600), made from the operating system's randomness on first use.
    /// Nodes started together with one key file agree on one key: a new key appears in `file`
    /// whole (linked in place from a file already written) or not at all, and whoever links
    /// second reads the first one's.
    pub fn load_or_create(file: &Path) -> Result<CompiledKey, RuntimeError> {
        let unreadable = |e: std::io::Error| RuntimeError(format!("{}: {e}", file.display()));
        match std::fs::read(file) {
            Ok(bytes) => {
                let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
                    RuntimeError(format!(
                        "{}: a key of {} bytes, not 32; delete it to make a new one",
                        file.display(),
                        bytes.len()
                    ))
                })?;
                Ok(CompiledKey(bytes))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::getrandom(&mut bytes)
                    .map_err(|e| RuntimeError(format!("no randomness for a key: {e}")))?;
                // Named by the new key's first bytes: unique to this attempt.
                let attempt: String = bytes[..8].iter().map(|b| format!("{b:02x}")).collect();
                let partial = file.with_extension(format!("partial-{attempt}"));
                crate::files::write_private(&partial, &bytes).map_err(unreadable)?;
                let linked = std::fs::hard_link(&partial, file);
                let _ = std::fs::remove_file(&partial);
                match linked {
                    Ok(()) => Ok(CompiledKey(bytes)),
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        CompiledKey::load_or_create(file)
                    }
                    Err(error) => Err(unreadable(error)),
                }
            }
            Err(error) => Err(unreadable(error)),
        }
    }

    fn mac(&self) -> HmacSha256 {
        use hmac::Mac;
        // HMAC takes a key of any length.
        <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC accepts every key length")
    }

    fn sign(&self, code: &[u8]) -> [u8; COMPILED_TAG_BYTES] {
        use hmac::Mac;
        let mut mac = self.mac();
        mac.update(code);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` signs `code` (compared in constant time).
    fn verify(&self, code: &[u8], tag: &[u8]) -> bool {
        use hmac::Mac;
        let mut mac = self.mac();
        mac.update(code);
        mac.verify_slice(tag).is_ok()
    }
}

impl RecipeRuntime {
    /// An engine configured for determinism, fuel and the pooling allocator.
    pub fn new() -> Result<RecipeRuntime, RuntimeError> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .cranelift_nan_canonicalization(true)
            // The caller gets one line; a wasm backtrace helps nobody there and costs time.
            .wasm_backtrace_max_frames(None)
            // Threads are not compiled into this engine at all.
            .wasm_relaxed_simd(false)
            .memory_reservation(RECIPE_MEMORY_BYTES_MAX as u64)
            .memory_guard_size(64 * 1024);
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(RECIPE_INSTANCES_MAX)
            .total_core_instances(RECIPE_INSTANCES_MAX * 16)
            .total_memories(RECIPE_INSTANCES_MAX * 4)
            .total_tables(RECIPE_INSTANCES_MAX * 8)
            .total_stacks(RECIPE_INSTANCES_MAX)
            .max_memory_size(RECIPE_MEMORY_BYTES_MAX)
            .linear_memory_keep_resident(RECIPE_MEMORY_KEEP_RESIDENT_BYTES)
            .table_keep_resident(64 * 1024);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(|e| RuntimeError(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        Recipe::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(|e| RuntimeError(e.to_string()))?;
        // What a Rust guest's std imports. Served deterministically: no files (no preopens), no
        // network, the entry's time, a fixed random seed, stdout and stderr discarded.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError(e.to_string()))?;
        serve_waits_at_once(&mut linker).map_err(|e| RuntimeError(e.to_string()))?;
        Ok(RecipeRuntime {
            engine,
            linker,
            compiled: Mutex::new(HashMap::new()),
            compiled_dir: None,
            worker: Mutex::new(None),
            live: Mutex::new(None),
        })
    }

    /// The same runtime, keeping compiled components in `dir` so that a restarted node loads
    /// them instead of compiling again. The node runs the machine code it finds there, so each
    /// file is signed with `key` (HMAC-SHA-256), a secret of this node kept outside `dir`: a
    /// file anyone else wrote, or a torn write, fails the check and is compiled again, not run.
    /// The directory is made private to the node's user (0700).
    pub fn with_compiled_dir(
        mut self,
        dir: &Path,
        key: CompiledKey,
    ) -> Result<RecipeRuntime, RuntimeError> {
        crate::files::private_dir(dir)
            .map_err(|e| RuntimeError(format!("cannot create {}: {e}", dir.display())))?;
        self.compiled_dir = Some((dir.to_path_buf(), key));
        self.prune_compiled();
        Ok(self)
    }

    /// Deletes compiled files beyond the newest [`RECIPE_COMPILED_FILES_MAX`], so the directory
    /// does not grow with every version ever deployed. Failing to is only untidy.
    fn prune_compiled(&self) {
        let Some((dir, _)) = &self.compiled_dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "cwasm"))
            .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
            .collect();
        if files.len() <= RECIPE_COMPILED_FILES_MAX {
            return;
        }
        files.sort();
        let excess = files.len() - RECIPE_COMPILED_FILES_MAX;
        for (_, file) in files.into_iter().take(excess) {
            let _ = std::fs::remove_file(file);
        }
    }

    /// The file a component compiled by this engine is kept in: named by the component's hash
    /// and by what the compiled code depends on (wasmtime version, target, settings).
    fn compiled_file(&self, hash: &str) -> Option<PathBuf> {
        let (dir, _) = self.compiled_dir.as_ref()?;
        let mut engine = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut engine);
        Some(dir.join(format!("{hash}-{:016x}.cwasm", engine.finish())))
    }

    /// A component compiled earlier, if its file is there and intact. The one `unsafe` in Cairn:
    /// loading machine code is trusting it.
    #[allow(unsafe_code)]
    fn load_compiled(&self, hash: &str) -> Option<Component> {
        let (_, key) = self.compiled_dir.as_ref()?;
        let bytes = std::fs::read(self.compiled_file(hash)?).ok()?;
        let (tag, code) = bytes.split_at_checked(COMPILED_TAG_BYTES)?;
        if !key.verify(code, tag) {
            tracing::warn!(%hash, "a compiled recipe failed its signature check; compiling again");
            return None;
        }
        // SAFETY: the bytes are what `Component::serialize` wrote for this engine's settings
        // (checked, inside wasmtime, by version and settings), signed with this node's secret
        // key: this node wrote them.
        unsafe { Component::deserialize(&self.engine, code) }.ok()
    }

    /// Keeps a compiled component for the next start; failing to is only slower.
    fn store_compiled(&self, hash: &str, component: &Component) {
        let (Some((_, key)), Some(file), Ok(code)) =
            (self.compiled_dir.as_ref(), self.compiled_file(hash), component.serialize())
        else {
            return;
        };
        let mut bytes = key.sign(&code).to_vec();
        bytes.extend_from_slice(&code);
        let partial = file.with_extension(format!("partial-{}", std::process::id()));
        let written = crate::files::write_private(&partial, &bytes)
            .and_then(|()| std::fs::rename(&partial, &file));
        if let Err(error) = written {
            tracing::warn!(file = %file.display(), %error, "cannot keep a compiled recipe");
            let _ = std::fs::remove_file(&partial);
        }
        self.prune_compiled();
    }

    /// The pre-instantiated component for a content hash, compiling it on first use.
    fn prepare(&self, hash: &str, component: &[u8]) -> Result<RecipePre<CallState>, CompileError> {
        let mut compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pre) = compiled.get(hash) {
            return Ok(pre.clone());
        }
        let component = match self.load_compiled(hash) {
            Some(component) => component,
            None => {
                let component = Component::new(&self.engine, component)
                    .map_err(|e| CompileError::NotAComponent(format!("{e:#}")))?;
                check_imports(&self.engine, &component)?;
                self.store_compiled(hash, &component);
                component
            }
        };
        check_imports(&self.engine, &component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| CompileError::Unserved(format!("{e:#}")))?;
        let pre =
            RecipePre::new(instance_pre).map_err(|e| CompileError::NotARecipe(format!("{e:#}")))?;
        if compiled.len() >= RECIPE_COMPILED_CACHE_MAX {
            compiled.clear();
        }
        compiled.insert(hash.to_string(), pre.clone());
        Ok(pre)
    }
}

/// The interfaces a recipe may import (any 0.2 version of the WASI ones): its own world, and
/// what a Rust guest's std reaches for, all served so that they answer at once and alike on
/// every replica. Sockets (refused by the context anyway) and everything else are refused at
/// deploy, naming the import.
const RECIPE_IMPORTS_ALLOWED: &[&str] = &[
    "cairn:recipe/store",
    "cairn:recipe/context",
    "cairn:recipe/notify",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// Refuses a component importing anything outside [`RECIPE_IMPORTS_ALLOWED`].
fn check_imports(engine: &Engine, component: &Component) -> Result<(), CompileError> {
    for (name, _) in component.component_type().imports(engine) {
        let interface = name.split_once('@').map_or(name, |(interface, _)| interface);
        if !RECIPE_IMPORTS_ALLOWED.contains(&interface) {
            return Err(CompileError::ForbiddenImport(name.to_string()));
        }
    }
    Ok(())
}

/// What a recipe's waits resolve to: ready at once. The clock a recipe sees stands still at the
/// entry's time, so a wait for any duration is over as soon as it starts.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

/// Replaces WASI's monotonic-clock subscriptions, which sleep in real time (what a guest's
/// `std::thread::sleep` compiles to: subscribe, then block), with pollables that are ready at
/// once: a recipe's sleep takes no time on any replica instead of holding up apply. The
/// interface is shadowed at the version the host serves; guests importing any 0.2 version
/// resolve to it.
fn serve_waits_at_once(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    for subscription in ["subscribe-duration", "subscribe-instant"] {
        clock.func_wrap(
            subscription,
            |mut store: StoreContextMut<'_, CallState>, (_,): (u64,)| {
                let table = &mut store.data_mut().table;
                let ready = table.push(Ready)?;
                Ok((subscribe(table, ready)?,))
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The monotonic clock interface as the host's WASI serves it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

type RunOutcome = wasmtime::Result<Result<Vec<u8>, String>>;

/// Runs blocking `work` (recipe calls) from the async runtime: on a worker of a multi-threaded
/// runtime the thread leaves it first (`block_in_place`), so other tasks move to another thread;
/// otherwise `work` just runs.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded { tokio::task::block_in_place(work) } else { work() }
}

/// What one run of a component gave: its outcome, whether memory was refused, the
/// notifications it sent, and the instance if it may serve another call of the entry.
struct Ran {
    outcome: RunOutcome,
    memory_refused: bool,
    /// The per-call bound the call's host calls passed, if any: it fails whatever it returned.
    limit: Option<String>,
    /// A write refused for the caller's rights, quota or session: it fails whatever it returned.
    refused: Option<ApiError>,
    /// The host failed to run the call at all (not the recipe's doing): the node must stop.
    host_fault: Option<String>,
    notifications: Vec<Notification>,
    live: Option<Live>,
    /// Fuel the call (with its instantiation, for a new instance) used.
    fuel_used: u64,
}

/// Makes `call` in `live` or in a new instance. A live instance is of the same recipe and
/// entry, so only the tree and the caller change.
fn run(
    engine: &Engine,
    pre: &RecipePre<CallState>,
    call: Call,
    entry: &OwnedEntry,
    live: Option<Live>,
) -> Ran {
    let (mut store, reused, calls) = match live {
        Some(Live { mut store, recipe, calls }) => {
            let data = store.data_mut();
            data.shared = call.shared;
            data.session = call.session;
            data.notifications.clear();
            data.memory_refused = false;
            data.budget = CallBudget::default();
            (store, Some(recipe), calls)
        }
        None => {
            let mut store = Store::new(engine, call.into_state());
            store.limiter(|state| state);
            (store, None, 0)
        }
    };
    let recipe = store.set_fuel(RECIPE_FUEL_PER_CALL).and_then(|()| match reused {
        Some(recipe) => Ok(recipe),
        None => pre.instantiate(&mut store),
    });
    let (outcome, recipe) = match recipe {
        // Not the recipe's trap (its start function's) nor its memory: the host could not make
        // an instance (no pool slot, no memory from the system), which another replica could.
        Err(error) if error.downcast_ref::<Trap>().is_none() && !store.data().memory_refused => {
            let host_fault = format!("cannot instantiate: {error:#}");
            return Ran {
                outcome: Err(error),
                memory_refused: false,
                limit: None,
                refused: None,
                host_fault: Some(host_fault),
                notifications: Vec::new(),
                live: None,
                fuel_used: 0,
            };
        }
        Err(error) => (Err(error), None),
        Ok(recipe) => {
            let outcome = match entry {
                OwnedEntry::Invoke { op, args } => recipe.call_invoke(&mut store, op, args),
                OwnedEntry::SessionEnded { session, deleted } => recipe
                    .call_on_session_ended(&mut store, *session, deleted)
                    .map(|()| Ok(Vec::new())),
            };
            // Only an instance that returned normally is fit for another call.
            let fit = outcome.is_ok() && calls + 1 < RECIPE_INSTANCE_CALLS_MAX;
            (outcome, fit.then_some(recipe))
        }
    };
    let fuel_used = RECIPE_FUEL_PER_CALL.saturating_sub(store.get_fuel().unwrap_or(0));
    let memory_refused = store.data().memory_refused;
    let limit = store.data_mut().budget.exceeded.take();
    let refused = store.data_mut().budget.refused.take();
    let notifications = std::mem::take(&mut store.data_mut().notifications);
    let live = recipe.map(|recipe| Live { store, recipe, calls: calls + 1 });
    Ran {
        outcome,
        memory_refused,
        limit,
        refused,
        host_fault: None,
        notifications,
        live,
        fuel_used,
    }
}

impl RecipeRuntime {
    /// Runs `work` where a component may run: outside the node's async runtime, because WASI's
    /// synchronous calls (a guest's clock, a panic message to stderr) block on a runtime of
    /// their own, which they may not do from inside ours. On a multi-threaded runtime (the
    /// node's) this thread leaves it for the call (`block_in_place`); with no runtime the call
    /// runs right here; on a single-threaded one it goes to the worker thread. A panic ends the
    /// call, not the node.
    fn outside_async<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let multi_threaded = match tokio::runtime::Handle::try_current() {
            Err(_) => None,
            Ok(handle) => {
                Some(handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            }
        };
        let guarded = |work: Box<dyn FnOnce() -> T + Send>| {
            std::panic::catch_unwind(AssertUnwindSafe(work))
                .map_err(|_| "the runtime panicked".to_string())
        };
        match multi_threaded {
            None => guarded(Box::new(work)),
            Some(true) => tokio::task::block_in_place(|| guarded(Box::new(work))),
            Some(false) => self.on_worker(work),
        }
    }

    /// Runs `work` on the worker thread and waits for it: one long-lived thread, as starting a
    /// thread per call cost more than the call.
    fn on_worker<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (reply, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = reply.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
        });
        let mut worker = self.worker.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = match worker.as_ref() {
            Some(sender) => sender.clone(),
            None => {
                let (sender, jobs) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name("cairn-recipe".into())
                    .stack_size(RECIPE_THREAD_STACK_BYTES)
                    .spawn(move || {
                        for job in jobs {
                            job();
                        }
                    })
                    .map_err(|e| format!("no thread to run on: {e}"))?;
                *worker = Some(sender.clone());
                sender
            }
        };
        drop(worker);
        if sender.send(job).is_err() {
            *self.worker.lock().unwrap_or_else(PoisonError::into_inner) = None;
            return Err("the recipe thread is gone".into());
        }
        match result.recv() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err("the runtime panicked".into()),
            Err(_) => Err("the recipe thread is gone".into()),
        }
    }
}

/// Turns a run's outcome into the recipe's result or the error its caller gets.
fn classify(name: &str, outcome: RunOutcome, memory_refused: bool) -> Result<Vec<u8>, ApiError> {
    match outcome {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(message)) => Err(fault(ErrorCode::RecipeError, name, message)),
        Err(error) if error.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) => Err(fault(
            ErrorCode::OutOfFuel,
            name,
            format!("ran past {RECIPE_FUEL_PER_CALL} units of fuel"),
        )),
        Err(_) if memory_refused => Err(fault(
            ErrorCode::OutOfMemory,
            name,
            format!("grew past {RECIPE_MEMORY_BYTES_MAX} bytes of memory"),
        )),
        Err(error) => {
            let why = match error.downcast_ref::<Trap>() {
                Some(trap) => trap.to_string(),
                None => error.root_cause().to_string(),
            };
            Err(fault(ErrorCode::RecipeTrap, name, why))
        }
    }
}

fn fault(code: ErrorCode, name: &str, detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(code).with_detail(format!("{name}: {detail}"))
}

impl RecipeRuntime {
    /// The instance kept for `name` in entry `zxid`, if any; instances of another entry are
    /// dropped.
    fn take_live(&self, zxid: Zxid, name: &str) -> Option<Live> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        match live.as_mut() {
            Some((entry, instances)) if *entry == zxid => instances.remove(name),
            _ => {
                *live = None;
                None
            }
        }
    }

    /// Keeps an instance for the next call of `name` in entry `zxid`, if there is room.
    fn keep_live(&self, zxid: Zxid, name: String, instance: Live) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let (entry, instances) = live.get_or_insert_with(|| (zxid, HashMap::new()));
        if *entry == zxid && instances.len() < RECIPE_LIVE_INSTANCES_MAX {
            instances.insert(name, instance);
        }
    }
}

impl RecipeRunner for RecipeRuntime {
    fn entry_applied(&self) {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    fn runtime_version(&self) -> &str {
        RUNTIME_VERSION
    }

    fn compile(&self, hash: &str, component: &[u8]) -> Result<(), CompileError> {
        self.prepare(hash, component).map(|_| ())
    }

    fn invoke(
        &self,
        tree: &mut DataTree,
        call: RecipeCall<'_>,
        effects: &mut Effects,
    ) -> Result<Vec<u8>, ApiError> {
        let name = format!("{}@{}", call.name, call.version);
        // Compiled when it was deployed, by this node and every replica on this runtime (or it
        // would have stopped); compiled again here only if this node has let it go since (its
        // cache is bounded) or restarted, when it loads what it kept on disk. A failure now is
        // this node's own, not the call's: `internal`, which stops the node.
        let pre = self
            .prepare(&call.deployed.hash, &call.deployed.component)
            .map_err(|why| fault(ErrorCode::Internal, &name, why))?;
        let shared = Arc::new(Mutex::new(Shared {
            tree: std::mem::take(tree),
            txn: Some(RecipeTxn::new(call.zxid, call.time_ms, call.session, call.caller.clone())),
        }));
        let this_call = Call {
            shared: shared.clone(),
            recipe: name.clone(),
            namespace: namespace(call.name),
            session: call.session.map_or(0, |session| session.0),
            zxid: call.zxid,
            time_ms: call.time_ms,
        };
        let entry = match call.entry {
            Entry::Invoke { op, args } => {
                OwnedEntry::Invoke { op: op.to_string(), args: args.to_vec() }
            }
            Entry::SessionEnded { session, deleted } => {
                OwnedEntry::SessionEnded { session: session.0, deleted: deleted.to_vec() }
            }
        };
        let engine = self.engine.clone();
        let live = self.take_live(call.zxid, &name);
        let mut fuel_used = 0;
        let result = match self.outside_async(move || run(&engine, &pre, this_call, &entry, live)) {
            Ok(ran) => {
                fuel_used = ran.fuel_used;
                if let Some(live) = ran.live {
                    self.keep_live(call.zxid, name.clone(), live);
                }
                match (ran.host_fault, ran.limit, ran.refused) {
                    (Some(why), _, _) => Err(fault(ErrorCode::Internal, &name, why)),
                    (None, Some(why), _) => Err(fault(ErrorCode::RecipeLimit, &name, why)),
                    (None, None, Some(refused)) => Err(refused),
                    (None, None, None) => classify(&name, ran.outcome, ran.memory_refused)
                        .map(|result| (result, ran.notifications)),
                }
            }
            // The host's side of the call broke (a panic, no thread to run on): not the
            // recipe's doing, and not certain to happen on another replica.
            Err(why) => Err(fault(ErrorCode::Internal, &name, why)),
        };
        let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let mut owned = std::mem::take(&mut shared.tree);
        let result = match (shared.txn.take(), result) {
            (Some(txn), Ok((result, mut notifications))) => {
                txn.commit(&mut owned, effects);
                effects.notifications.append(&mut notifications);
                Ok(result)
            }
            (Some(txn), Err(error)) => {
                txn.rollback(&mut owned);
                Err(error)
            }
            (None, result) => result.map(|(result, _)| result),
        };
        *tree = owned;
        let failed = result.as_ref().err().map(|error| error.code);
        crate::metrics::get().recipe_call(call.name, fuel_used, failed);
        result
    }
}

#[cfg(test)]
mod tests {
    use cairn_wire::Reply;

    use super::*;
    use crate::store::{Action, Command, Principal, SessionId, Write};

    const HOSTILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cairn_recipe_hostile.wasm"));
    /// A component of the recipe world that also imports WASI's sockets.
    const SOCKET_USER: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/cairn_recipe_socket_user.wasm"));

    struct Node {
        tree: DataTree,
        runtime: RecipeRuntime,
        zxid: u64,
    }

    impl Node {
        fn new() -> Node {
            Node { tree: DataTree::new(), runtime: RecipeRuntime::new().expect("engine"), zxid: 0 }
        }

        fn apply(
            &mut self,
            session: Option<u64>,
            action: Action,
        ) -> (Result<Reply, ApiError>, Effects) {
            self.zxid += 1;
            let mut effects = Effects::default();
            let write =
                Write { session: session.map(SessionId), principal: Principal::System, action };
            let command = Command { time_ms: self.zxid * 10, writes: vec![write] };
            // As the state machine does: apply, then compile what the entry deployed.
            let applied = self
                .tree
                .apply_command(Zxid(self.zxid), &command, &mut effects, &self.runtime)
                .and_then(|replies| {
                    self.runtime
                        .compile_deployed(Zxid(self.zxid), &effects.deployed)
                        .map(|()| replies)
                });
            let reply = match applied {
                Ok(mut replies) => replies.pop().unwrap_or_else(|| panic!("no reply")),
                // A fault of this node, which would stop it: as the reply `internal`.
                Err(fault) => Err(ApiError::new(ErrorCode::Internal).with_detail(fault.why)),
            };
            self.tree
                .check_invariants()
                .unwrap_or_else(|e| panic!("after {:?}: {e}", command.writes[0].action));
            (reply, effects)
        }

        /// Deploys as a node does: admission (the checks, then compiling), then the entry.
        fn deploy(&mut self, name: &str, component: &[u8]) -> Result<Reply, ApiError> {
            let action = Action::DeployRecipe {
                name: name.into(),
                version: None,
                component: component.to_vec(),
                runtime: crate::recipe::RUNTIME_VERSION.to_string(),
                owner: None,
            };
            let write = Write { session: None, principal: Principal::System, action };
            let version = self.tree.check_deploy(&write)?.unwrap_or_default();
            self.runtime.admit(&format!("{name}@{version}"), component)?;
            self.apply(None, write.action).0
        }

        fn invoke(&mut self, name: &str, op: &str, args: &[u8]) -> Result<Vec<u8>, ApiError> {
            let action = Action::InvokeRecipe {
                name: name.into(),
                version: None,
                op: op.into(),
                args: args.to_vec(),
            };
            match self.apply(None, action).0? {
                Reply::Invoked { result } => Ok(result),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn counter() -> &'static [u8] {
        builtin("counter")
    }

    #[test]
    fn deploy_and_invoke_the_counter() {
        let mut node = Node::new();
        let deployed = node.deploy("counter", counter()).expect("deploys");
        assert!(matches!(deployed, Reply::RecipeDeployed { version: 1, .. }), "{deployed:?}");
        let result = node.invoke("counter", "add", br#"{"name":"hits","delta":5}"#).expect("adds");
        assert_eq!(result, br#"{"value":5}"#);
        let result = node.invoke("counter", "add", br#"{"name":"hits","delta":2}"#).expect("adds");
        assert_eq!(result, br#"{"value":7}"#);
        // The recipe's writes land in its namespace.
        let (data, _) = node.tree.get("/cairn/recipes/counter/hits").expect("written");
        assert_eq!(data, b"7");
        let error = node.invoke("counter", "frob", br#"{"name":"hits"}"#).expect_err("unknown op");
        assert_eq!(error.code, ErrorCode::RecipeError);
        assert_eq!(
            node.invoke("nothing", "get", b"{}").expect_err("absent").code,
            ErrorCode::NoRecipe
        );

        // A second version goes live beside the first; the newest is the default.
        let second = node.deploy("counter", counter()).expect("deploys again");
        assert!(matches!(second, Reply::RecipeDeployed { version: 2, .. }));
        assert_eq!(node.tree.recipes().deployed["counter"].len(), 2);
        assert_eq!(
            node.apply(None, Action::RetireRecipe { name: "counter".into(), version: 1 }).0,
            Ok(Reply::RecipeRetired {})
        );
        assert_eq!(
            node.invoke("counter", "get", br#"{"name":"hits"}"#).expect("gets"),
            br#"{"value":7}"#
        );

        // Versions are never reused, even once every version of the name is retired.
        node.apply(None, Action::RetireRecipe { name: "counter".into(), version: 2 })
            .0
            .expect("retires");
        let third = node.deploy("counter", counter()).expect("deploys once more");
        assert!(matches!(third, Reply::RecipeDeployed { version: 3, .. }), "{third:?}");
        let again = Action::DeployRecipe {
            name: "counter".into(),
            version: Some(1),
            component: counter().to_vec(),
            runtime: crate::recipe::RUNTIME_VERSION.to_string(),
            owner: None,
        };
        assert_eq!(node.apply(None, again).0.expect_err("reused").code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn compiled_components_are_kept_and_a_torn_file_is_compiled_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = CompiledKey::new([3; 32]);
        let runtime =
            || RecipeRuntime::new().expect("engine").with_compiled_dir(dir.path(), key.clone());
        let hash = crate::store::recipes::component_hash(counter());
        runtime().expect("runtime").compile(&hash, counter()).expect("compiles");
        let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .expect("listed")
            .map(|entry| entry.expect("entry").path())
            .collect();
        assert_eq!(files.len(), 1, "one compiled component kept: {files:?}");
        let kept = std::fs::read(&files[0]).expect("read");

        // Another runtime loads it instead of compiling.
        let second = runtime().expect("runtime");
        let hash = files[0].file_name().and_then(|n| n.to_str()).expect("name")[..64].to_string();
        assert!(second.load_compiled(&hash).is_some(), "loads what the first one kept");

        // A file signed with another node's key is not run: whoever can write the directory
        // but does not hold this node's key cannot make it run their code. (Before, a SHA-256 of
        // the contents was the only check, which anyone can compute.)
        let forged = RecipeRuntime::new()
            .expect("engine")
            .with_compiled_dir(dir.path(), CompiledKey::new([4; 32]))
            .expect("runtime");
        assert!(forged.load_compiled(&hash).is_none(), "another key's signature is refused");
        let mut resigned = CompiledKey::new([4; 32]).sign(&kept[COMPILED_TAG_BYTES..]).to_vec();
        resigned.extend_from_slice(&kept[COMPILED_TAG_BYTES..]);
        std::fs::write(&files[0], &resigned).expect("write");
        assert!(second.load_compiled(&hash).is_none(), "a file signed by another key is refused");
        std::fs::write(&files[0], &kept).expect("write");

        // Torn or tampered bytes are not run: the signature no longer matches, so it compiles.
        let mut torn = kept.clone();
        let last = torn.len() - 1;
        torn[last] ^= 0xff;
        std::fs::write(&files[0], &torn).expect("write");
        assert!(second.load_compiled(&hash).is_none(), "a damaged file is refused");
        std::fs::write(&files[0], &kept[..kept.len() / 2]).expect("write");
        let mut node = Node { runtime: runtime().expect("runtime"), ..Node::new() };
        node.deploy("counter", counter()).expect("compiles again");
        assert_eq!(
            node.invoke("counter", "add", br#"{"name":"n","delta":2}"#).expect("runs"),
            br#"{"value":2}"#
        );
        assert_eq!(std::fs::read(&files[0]).expect("read"), kept, "and kept again");
    }

    /// Deploys cannot grow the state without end: live versions per name are bounded (as are
    /// names and the bytes of every component).
    #[test]
    fn live_versions_of_a_recipe_are_bounded() {
        use crate::store::recipes::RECIPE_VERSIONS_LIVE_PER_NAME_MAX;
        let mut node = Node::new();
        for _ in 0..RECIPE_VERSIONS_LIVE_PER_NAME_MAX {
            node.deploy("counter", counter()).expect("deploys");
        }
        let error = node.deploy("counter", counter()).expect_err("one too many");
        assert_eq!(error.code, ErrorCode::QuotaExceeded, "{error}");
        node.apply(None, Action::RetireRecipe { name: "counter".into(), version: 1 })
            .0
            .expect("retires");
        node.deploy("counter", counter()).expect("room again");
    }

    /// Nodes started at once with one key file (`dev-cluster`'s) all end up with one key.
    #[test]
    fn nodes_sharing_a_key_file_agree_on_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("compiled.key");
        let keys: Vec<[u8; 32]> = (0..8)
            .map(|_| {
                let file = file.clone();
                std::thread::spawn(move || CompiledKey::load_or_create(&file).expect("a key").0)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|started| started.join().expect("no panic"))
            .collect();
        assert!(keys.iter().all(|key| *key == keys[0]), "keys differ");
        assert_eq!(std::fs::read(&file).expect("kept"), keys[0]);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("listed").collect();
        assert_eq!(left.len(), 1, "no partial files left: {left:?}");
    }

    #[test]
    fn deploy_refuses_what_is_not_a_recipe() {
        let mut node = Node::new();
        let error = node.deploy("junk", b"\0asm not really").expect_err("refused");
        assert_eq!(error.code, ErrorCode::InvalidRecipe);
        let error = node.deploy("Bad Name", counter()).expect_err("refused");
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(node.tree.recipes().deployed.is_empty());
    }

    /// Apply never compiles: a component that cannot run is refused at admission, before the
    /// log; one that reached the log all the same is compiled after its entry, and a node that
    /// cannot compile it stops there.
    #[test]
    fn compiling_is_admission_work_and_a_node_that_cannot_compile_stops() {
        let mut node = Node::new();
        let junk = b"\0asm not really".to_vec();
        let refused = node.deploy("junk", &junk).expect_err("refused at admission");
        assert_eq!(refused.code, ErrorCode::InvalidRecipe);
        let action = Action::DeployRecipe {
            name: "junk".into(),
            version: None,
            component: junk,
            runtime: crate::recipe::RUNTIME_VERSION.to_string(),
            owner: None,
        };
        let (reply, effects) = node.apply(None, action);
        assert_eq!(effects.deployed.len(), 1, "apply recorded it without compiling it");
        assert_eq!(reply.expect_err("the node stops").code, ErrorCode::Internal);
    }

    #[test]
    fn misbehaving_recipes_end_with_clear_errors_and_write_nothing() {
        let mut node = Node::new();
        node.deploy("hostile", HOSTILE).expect("deploys");
        assert_eq!(node.invoke("hostile", "ok", b"").expect("runs"), b"fine");
        let before = node.tree.get("/cairn/recipes/hostile/written").expect("written").0.to_vec();
        for (op, code) in [
            ("fail", ErrorCode::RecipeError),
            ("spin", ErrorCode::OutOfFuel),
            ("bomb", ErrorCode::OutOfMemory),
            ("trap", ErrorCode::RecipeTrap),
        ] {
            let error = node.invoke("hostile", op, b"").expect_err(op);
            assert_eq!(error.code, code, "{op}: {error}");
            let after = node.tree.get("/cairn/recipes/hostile/written").expect("still there").0;
            assert_eq!(after, before.as_slice(), "{op} left a write behind");
        }
        // A recipe cannot reach outside its namespace.
        for path in ["/../../../escaped", "relative", "/a//b"] {
            let error = node.invoke("hostile", "escape", path.as_bytes()).expect_err(path);
            assert_eq!(error.code, ErrorCode::RecipeError, "{path}");
        }
        assert!(node.tree.exists("/escaped").expect("valid").is_none());
        // And it still runs after all of that.
        assert_eq!(node.invoke("hostile", "ok", b"").expect("runs"), b"fine");
    }

    /// Apply runs inside the node's async runtime; a guest writing to stderr (a panic message)
    /// must not take it down.
    #[tokio::test(flavor = "multi_thread")]
    async fn runs_inside_an_async_runtime() {
        misbehave_inside_a_runtime();
    }

    /// The same on a single-threaded runtime, where calls go to the worker thread.
    #[tokio::test(flavor = "current_thread")]
    async fn runs_inside_a_single_threaded_runtime() {
        misbehave_inside_a_runtime();
    }

    fn misbehave_inside_a_runtime() {
        let mut node = Node::new();
        node.deploy("hostile", HOSTILE).expect("deploys");
        assert_eq!(
            node.invoke("hostile", "trap", b"").expect_err("traps").code,
            ErrorCode::RecipeTrap
        );
        assert_eq!(
            node.invoke("hostile", "bomb", b"").expect_err("bombs").code,
            ErrorCode::OutOfMemory
        );
        assert_eq!(node.invoke("hostile", "ok", b"").expect("runs"), b"fine");
    }

    /// The calls of one log entry may share an instance; calls of different entries, or after a
    /// call that trapped, never do.
    #[test]
    fn an_instance_serves_one_entry_at_most() {
        let mut node = Node::new();
        node.deploy("hostile", HOSTILE).expect("deploys");
        let call = |op: &str| Write {
            session: None,
            principal: Principal::System,
            action: Action::InvokeRecipe {
                name: "hostile".into(),
                version: None,
                op: op.into(),
                args: Vec::new(),
            },
        };
        let mut entry = |ops: &[&str]| -> Vec<Result<Vec<u8>, ErrorCode>> {
            node.zxid += 1;
            let command = Command { time_ms: 1, writes: ops.iter().map(|op| call(op)).collect() };
            let mut effects = Effects::default();
            node.tree
                .apply_command(Zxid(node.zxid), &command, &mut effects, &node.runtime)
                .expect("no fault")
                .into_iter()
                .map(|reply| match reply {
                    Ok(Reply::Invoked { result }) => Ok(result),
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(error) => Err(error.code),
                })
                .collect()
        };
        let ok = |n: &str| Ok(n.as_bytes().to_vec());
        assert_eq!(entry(&["calls", "calls", "calls"]), [ok("1"), ok("2"), ok("3")]);
        assert_eq!(entry(&["calls"]), [ok("1")]);
        assert_eq!(
            entry(&["calls", "trap", "calls", "fail", "calls"]),
            [ok("1"), Err(ErrorCode::RecipeTrap), ok("1"), Err(ErrorCode::RecipeError), ok("2")]
        );
    }

    #[test]
    fn same_log_same_state_on_every_replica() {
        let mut one = Node::new();
        let mut two = Node::new();
        for node in [&mut one, &mut two] {
            node.deploy("counter", counter()).expect("deploys");
            node.deploy("hostile", HOSTILE).expect("deploys");
            for i in 0..5 {
                let _ = node.invoke(
                    "counter",
                    "add",
                    format!(r#"{{"name":"c","delta":{i}}}"#).as_bytes(),
                );
                let _ = node.invoke("hostile", "spin", b"");
            }
        }
        assert_eq!(one.tree.to_image().expect("encodes"), two.tree.to_image().expect("encodes"));
    }

    fn builtin(name: &str) -> &'static [u8] {
        builtin::BUILTIN_RECIPES.iter().find(|(n, _)| *n == name).expect("built in").1
    }

    /// Opens a session and returns its id.
    fn open_session(node: &mut Node) -> u64 {
        match node
            .apply(
                None,
                Action::OpenSession {
                    timeout_ms: 10_000,
                    secret_hash: crate::store::SecretHash::of(1),
                },
            )
            .0
        {
            Ok(Reply::Session { session_id, .. }) => session_id,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn invoke_as(
        node: &mut Node,
        session: u64,
        name: &str,
        op: &str,
        args: &[u8],
    ) -> (Result<Vec<u8>, ApiError>, Effects) {
        let action = Action::InvokeRecipe {
            name: name.into(),
            version: None,
            op: op.into(),
            args: args.to_vec(),
        };
        let (reply, effects) = node.apply(Some(session), action);
        let result = reply.map(|reply| match reply {
            Reply::Invoked { result } => result,
            other => panic!("unexpected {other:?}"),
        });
        (result, effects)
    }

    /// A node with fair-lock deployed and lock `l` held by one session and awaited by another:
    /// the node, the holder and the waiter.
    fn lock_held_and_awaited() -> (Node, u64, u64) {
        let mut node = Node::new();
        node.deploy("fair-lock", builtin("fair-lock")).expect("deploys");
        let holder = open_session(&mut node);
        let waiter = open_session(&mut node);
        let lock = br#"{"lock":"l","wait":true}"#;
        invoke_as(&mut node, holder, "fair-lock", "acquire", lock).0.expect("granted");
        invoke_as(&mut node, waiter, "fair-lock", "acquire", lock).0.expect("queued");
        (node, holder, waiter)
    }

    /// A recipe that sleeps, with std's `sleep` or raw WASI polling, is answered at once: its
    /// clock stands still at the entry's time, so any wait is already over. (Before, the sleep
    /// was real, inside apply, with the state locked.)
    #[test]
    fn a_sleeping_recipe_does_not_hold_up_apply() {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let mut node = Node::new();
            node.deploy("hostile", HOSTILE).expect("deploys");
            let slept = node.invoke("hostile", "sleep", b"");
            let polled = node.invoke("hostile", "poll", b"");
            let _ = done.send((slept, polled));
        });
        let (slept, polled) =
            finished.recv_timeout(Duration::from_secs(120)).expect("an hour's sleep took no time");
        assert_eq!(slept.expect("sleeps"), b"woke");
        assert!(polled.expect("polls").starts_with(b"polled"));
    }

    #[test]
    fn a_recipe_importing_what_it_may_not_is_refused_at_deploy() {
        let engine = RecipeRuntime::new().expect("engine");
        let component = Component::new(&engine.engine, SOCKET_USER).expect("compiles");
        let error = check_imports(&engine.engine, &component).expect_err("refused");
        assert!(
            matches!(&error, CompileError::ForbiddenImport(name) if name.starts_with("wasi:sockets/")),
            "{error}"
        );
        for (name, bytes) in builtin::BUILTIN_RECIPES {
            let component = Component::new(&engine.engine, bytes).expect("compiles");
            check_imports(&engine.engine, &component)
                .unwrap_or_else(|e| panic!("built-in {name}: {e}"));
        }
        let mut node = Node::new();
        let error = node.deploy("sockets", SOCKET_USER).expect_err("refused");
        assert_eq!(error.code, ErrorCode::InvalidRecipe);
        assert!(error.to_string().contains("wasi:sockets/"), "{error}");
    }

    /// One call of 8 bytes of arguments could fill the tree; the per-call bounds stop it, and
    /// the call writes nothing.
    #[test]
    fn a_recipe_that_creates_without_end_gets_recipe_limit() {
        let mut node = Node::new();
        node.deploy("hostile", HOSTILE).expect("deploys");
        let before = node.tree.size();
        for (size, why) in [("16", "created more than"), ("1000000", "wrote more than")] {
            let error = node.invoke("hostile", "sprawl", size.as_bytes()).expect_err("stopped");
            assert_eq!(error.code, ErrorCode::RecipeLimit, "{error}");
            assert!(error.to_string().contains(why), "{error}");
            assert_eq!(node.tree.size(), before, "nothing written");
        }
        assert_eq!(node.invoke("hostile", "ok", b"").expect("runs on"), b"fine");
    }

    /// A recipe may notify only sessions with a stake in it; a message to any other session is
    /// dropped, so no recipe can pass its message off as another's grant.
    #[test]
    fn notifications_reach_only_sessions_with_a_stake() {
        let (mut node, holder, waiter) = lock_held_and_awaited();
        node.deploy("hostile", HOSTILE).expect("deploys");

        // The waiter has no stake in `hostile`: the forged grant goes nowhere.
        let forged = format!(r#"{waiter} {{"lock":"l","token":99}}"#);
        let (result, effects) = invoke_as(&mut node, holder, "hostile", "forge", forged.as_bytes());
        result.expect("runs");
        assert!(effects.notifications.is_empty(), "{:?}", effects.notifications);

        // Its caller has a stake; so has a waiter of fair-lock in fair-lock's own messages.
        let to_self = format!("{holder} hello");
        let (_, effects) = invoke_as(&mut node, holder, "hostile", "forge", to_self.as_bytes());
        assert_eq!(
            effects.notifications,
            [Notification {
                session: SessionId(holder),
                recipe: "hostile@1".into(),
                message: b"hello".to_vec()
            }]
        );
        let (_, effects) = invoke_as(&mut node, holder, "fair-lock", "release", br#"{"lock":"l"}"#);
        assert_eq!(effects.notifications.len(), 1, "{:?}", effects.notifications);
        assert_eq!(effects.notifications[0].session, SessionId(waiter));
        assert_eq!(effects.notifications[0].recipe, "fair-lock@1");
    }

    /// A version of a recipe shares the namespace of the others; one that rewrites the lock's
    /// record cannot make the next grant's token smaller, because tokens come from the host.
    #[test]
    fn fencing_tokens_grow_whatever_version_is_deployed() {
        let mut node = Node::new();
        node.deploy("fair-lock", builtin("fair-lock")).expect("deploys");
        let session = open_session(&mut node);
        let token = |result: Result<Vec<u8>, ApiError>| -> u64 {
            let reply: serde_json::Value =
                serde_json::from_slice(&result.expect("granted")).expect("json");
            reply["token"].as_u64().expect("a token")
        };
        let lock = br#"{"lock":"l","wait":true}"#;
        let mut last = 0;
        for _ in 0..4 {
            let granted = token(invoke_as(&mut node, session, "fair-lock", "acquire", lock).0);
            assert!(granted > last, "{granted} after {last}");
            last = granted;
            invoke_as(&mut node, session, "fair-lock", "release", br#"{"lock":"l"}"#)
                .0
                .expect("released");
        }
        // A hostile version rewinds the lock's record, then is retired.
        node.deploy("fair-lock", HOSTILE).expect("deploys as version 2");
        invoke_as(&mut node, session, "fair-lock", "put", br#"/l {"token":0}"#).0.expect("put");
        node.apply(None, Action::RetireRecipe { name: "fair-lock".into(), version: 2 })
            .0
            .expect("retired");
        let granted = token(invoke_as(&mut node, session, "fair-lock", "acquire", lock).0);
        assert!(granted > last, "token {granted} after {last}: the counter went back");
    }

    /// A runtime that names itself differently: what a node built with another wasmtime is.
    struct OtherRuntime(RecipeRuntime);

    impl RecipeRunner for OtherRuntime {
        fn runtime_version(&self) -> &str {
            "wasmtime-0.0.0/fuel-0"
        }

        fn compile(&self, hash: &str, component: &[u8]) -> Result<(), CompileError> {
            self.0.compile(hash, component)
        }

        fn invoke(
            &self,
            tree: &mut DataTree,
            call: RecipeCall<'_>,
            effects: &mut Effects,
        ) -> Result<Vec<u8>, ApiError> {
            self.0.invoke(tree, call, effects)
        }
    }

    /// A node whose runtime is not the one the cluster's recipes were deployed for stops at the
    /// first entry that would run recipe code, instead of answering `internal` while the other
    /// replicas apply it.
    #[test]
    fn a_node_with_another_runtime_stops_rather_than_differ() {
        let mut node = Node::new();
        node.deploy("counter", counter()).expect("deploys");
        let before = node.tree.clone();
        let other = OtherRuntime(RecipeRuntime::new().expect("engine"));
        let add = Write {
            session: None,
            principal: Principal::System,
            action: Action::InvokeRecipe {
                name: "counter".into(),
                version: None,
                op: "add".into(),
                args: br#"{"name":"n","delta":1}"#.to_vec(),
            },
        };
        let deploy = Write {
            session: None,
            principal: Principal::System,
            action: Action::DeployRecipe {
                name: "counter".into(),
                version: None,
                component: counter().to_vec(),
                runtime: crate::recipe::RUNTIME_VERSION.to_string(),
                owner: None,
            },
        };
        for write in [add, deploy] {
            let mut tree = before.clone();
            let command = Command { time_ms: 1, writes: vec![write] };
            let fault = tree
                .apply_command(Zxid(node.zxid + 1), &command, &mut Effects::default(), &other)
                .expect_err("a fault, not a reply");
            assert!(fault.why.contains("wasmtime-0.0.0/fuel-0"), "{fault}");
        }
        // The same entry on a node with the cluster's runtime applies.
        let command = Command {
            time_ms: 1,
            writes: vec![Write {
                session: None,
                principal: Principal::System,
                action: Action::InvokeRecipe {
                    name: "counter".into(),
                    version: None,
                    op: "get".into(),
                    args: br#"{"name":"n"}"#.to_vec(),
                },
            }],
        };
        let replies = node
            .tree
            .apply_command(Zxid(node.zxid + 1), &command, &mut Effects::default(), &node.runtime)
            .expect("no fault");
        assert!(replies[0].is_ok(), "{replies:?}");
    }

    /// Moving to another runtime: frozen, no recipe code runs (invokes refused, hooks wait);
    /// a node on the new runtime may then load the state and adopt it, running the hooks
    /// there, while a node still on the old one stops at the adopt rather than run them.
    #[test]
    fn the_cluster_moves_to_another_runtime_through_a_freeze() {
        let (mut node, holder, waiter) = lock_held_and_awaited();
        let adopt = |runtime: &str| Action::AdoptRecipeRuntime { runtime: runtime.into() };
        // Adopting another runtime unfrozen would apply old entries' successors on it: refused.
        let refused = node.apply(None, adopt("wasmtime-0.0.0/fuel-0")).0.expect_err("refused");
        assert_eq!(refused.code, ErrorCode::InvalidArgument);

        let frozen = node.apply(None, Action::FreezeRecipes).0.expect("frozen");
        assert!(matches!(frozen, Reply::RecipeRuntime { frozen: true, .. }), "{frozen:?}");
        let error = invoke_as(&mut node, holder, "fair-lock", "status", br#"{"lock":"l"}"#)
            .0
            .expect_err("no recipe code while frozen");
        assert_eq!(error.code, ErrorCode::Unavailable);
        // The holder's session ends: its znode goes, its hook waits.
        let (ended, effects) = node.apply(Some(holder), Action::CloseSession);
        ended.expect("closed");
        assert!(effects.notifications.is_empty(), "no hook ran: {:?}", effects.notifications);
        assert_eq!(node.tree.recipes().pending_hooks.len(), 1);

        // A node still on the old runtime stops at the adopt instead of running the hook.
        let mut old = node.tree.clone();
        let command =
            Command { time_ms: 1, writes: vec![Write::system(adopt("wasmtime-0.0.0/fuel-0"))] };
        let fault = old
            .apply_command(Zxid(node.zxid + 1), &command, &mut Effects::default(), &node.runtime)
            .expect_err("stops");
        assert!(fault.why.contains("wasmtime-0.0.0/fuel-0"), "{fault}");

        // A node on the new runtime adopts it and runs the hook: the waiter gets the lock.
        let new = OtherRuntime(RecipeRuntime::new().expect("engine"));
        let mut effects = Effects::default();
        let replies = node
            .tree
            .apply_command(Zxid(node.zxid + 1), &command, &mut effects, &new)
            .expect("applies");
        assert!(
            matches!(&replies[0], Ok(Reply::RecipeRuntime { frozen: false, runtime: Some(r) }) if r == "wasmtime-0.0.0/fuel-0"),
            "{replies:?}"
        );
        assert!(node.tree.recipes().pending_hooks.is_empty());
        assert_eq!(effects.notifications.len(), 1, "{:?}", effects.notifications);
        assert_eq!(effects.notifications[0].session, SessionId(waiter));
    }

    #[test]
    fn clients_cannot_write_a_recipe_namespace() {
        let mut node = Node::new();
        node.deploy("counter", counter()).expect("deploys");
        let forged = Action::Create(cairn_wire::CreateRequest {
            path: "/cairn/recipes/counter/hits".into(),
            data: b"1000".to_vec(),
            null_data: false,
            mode: cairn_wire::CreateMode::Persistent,
            sequential: false,
            ttl_ms: None,
            acl: None,
        });
        let error = node.apply(Some(1), forged).0.expect_err("reserved");
        assert_eq!(error.code, ErrorCode::InvalidArgument);
    }
}
