//! A recipe that misbehaves on request: the runtime's tests deploy it to check that each kind
//! of misbehaviour ends with a clear error and writes nothing.

use std::sync::atomic::{AtomicU32, Ordering};

use cairn_recipe::{Host, Mode, Recipe};

/// What a recipe must not rely on: state kept in the instance between calls.
static CALLS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
pub struct Hostile;

impl Recipe for Hostile {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        // Every op writes first, so a test can see the write undone.
        host.put("/written", op.as_bytes()).map_err(|e| e.to_string())?;
        match op {
            "ok" => Ok(b"fine".to_vec()),
            // How many calls this instance has served: shows when an instance is reused.
            "calls" => Ok((CALLS.fetch_add(1, Ordering::Relaxed) + 1).to_string().into_bytes()),
            "fail" => Err("refused on purpose".into()),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("trapped on purpose"),
            "escape" => {
                let path = String::from_utf8_lossy(args).into_owned();
                host.create(&path, b"", Mode::Persistent, false)
                    .map(|p| p.into_bytes())
                    .map_err(|e| e.to_string())
            }
            "notify" => {
                let session = host.session();
                host.notify(session, b"hello");
                Ok(Vec::new())
            }
            // What an honest author's `sleep` compiles to: a monotonic-clock pollable, blocked on.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3_600));
                Ok(b"woke".to_vec())
            }
            // The same through raw WASI: a pollable for an hour from now, polled.
            "poll" => poll_an_hour(),
            // `SESSION MESSAGE`: a notification to any session, stake or not.
            "forge" => {
                let text = String::from_utf8_lossy(args);
                let (session, message) = text.split_once(' ').ok_or("want SESSION MESSAGE")?;
                let session: u64 = session.parse().map_err(|_| "bad session")?;
                host.notify(session, message.as_bytes());
                Ok(Vec::new())
            }
            // `PATH DATA`: overwrites (or creates) any znode of the namespace.
            "put" => {
                let text = String::from_utf8_lossy(args);
                let (path, data) = text.split_once(' ').ok_or("want PATH DATA")?;
                host.put(path, data.as_bytes()).map_err(|e| e.to_string())?;
                Ok(Vec::new())
            }
            // Creates znodes of `args` bytes each until something stops it.
            "sprawl" => {
                let size: usize = String::from_utf8_lossy(args).parse().unwrap_or(0);
                let data = vec![7u8; size];
                let mut created: u64 = 0;
                loop {
                    host.create("/sprawl-", &data, Mode::Persistent, true)
                        .map_err(|e| format!("stopped after {created}: {e}"))?;
                    created += 1;
                }
            }
            other => Err(format!("unknown op {other}")),
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn poll_an_hour() -> Result<Vec<u8>, String> {
    let pollable = wasip2::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000);
    let ready = wasip2::io::poll::poll(&[&pollable]);
    pollable.block();
    Ok(format!("polled {ready:?}").into_bytes())
}

#[cfg(not(target_arch = "wasm32"))]
fn poll_an_hour() -> Result<Vec<u8>, String> {
    Err("raw WASI exists only in the component".into())
}

cairn_recipe::export!(Hostile);
