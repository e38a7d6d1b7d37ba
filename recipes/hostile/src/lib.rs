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
            other => Err(format!("unknown op {other}")),
        }
    }
}

cairn_recipe::export!(Hostile);
