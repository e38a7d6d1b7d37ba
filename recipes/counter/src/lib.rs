//! The counter recipe: named 64-bit counters in one namespace.
//!
//! Ops (arguments and results are JSON):
//! - `add` `{"name": "hits", "delta": 5}` → `{"value": 12}` (a missing counter starts at 0)
//! - `get` `{"name": "hits"}` → `{"value": 12}`
//! - `cas` `{"name": "hits", "expected": 12, "value": 0}` → `{"value": 0, "swapped": true}`

use cairn_recipe::{Host, Recipe};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug)]
pub struct Counter;

#[derive(Deserialize)]
struct Args {
    name: String,
    #[serde(default)]
    delta: i64,
    #[serde(default)]
    expected: i64,
    #[serde(default)]
    value: i64,
}

fn path(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('/') {
        return Err(format!("invalid counter name {name:?}"));
    }
    Ok(format!("/{name}"))
}

fn read(host: &mut dyn Host, path: &str) -> Result<i64, String> {
    match host.read(path).map_err(|e| e.to_string())? {
        None => Ok(0),
        Some(data) => {
            String::from_utf8_lossy(&data).parse().map_err(|_| format!("{path} is not a counter"))
        }
    }
}

impl Recipe for Counter {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Args = serde_json::from_slice(args).map_err(|e| format!("bad arguments: {e}"))?;
        let path = path(&args.name)?;
        let current = read(host, &path)?;
        let reply = match op {
            "get" => json!({ "value": current }),
            "add" => {
                let value = current.checked_add(args.delta).ok_or("counter overflow")?;
                host.put(&path, value.to_string().as_bytes()).map_err(|e| e.to_string())?;
                json!({ "value": value })
            }
            "cas" => {
                let swapped = current == args.expected;
                if swapped {
                    host.put(&path, args.value.to_string().as_bytes())
                        .map_err(|e| e.to_string())?;
                }
                json!({ "value": if swapped { args.value } else { current }, "swapped": swapped })
            }
            other => return Err(format!("unknown op {other:?}; counter knows add, get, cas")),
        };
        Ok(reply.to_string().into_bytes())
    }
}

cairn_recipe::export!(Counter);

#[cfg(test)]
mod tests {
    use cairn_recipe::testing::MemoryHost;

    use super::*;

    fn call(
        host: &mut MemoryHost,
        op: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let reply = host.invoke::<Counter>(1, op, args.to_string().as_bytes())?;
        Ok(serde_json::from_slice(&reply).expect("json"))
    }

    #[test]
    fn add_get_cas() {
        let mut host = MemoryHost::default();
        assert_eq!(call(&mut host, "get", json!({"name": "c"})), Ok(json!({"value": 0})));
        assert_eq!(
            call(&mut host, "add", json!({"name": "c", "delta": 5})),
            Ok(json!({"value": 5}))
        );
        assert_eq!(
            call(&mut host, "add", json!({"name": "c", "delta": -2})),
            Ok(json!({"value": 3}))
        );
        assert_eq!(
            call(&mut host, "cas", json!({"name": "c", "expected": 1, "value": 9})),
            Ok(json!({"value": 3, "swapped": false}))
        );
        assert_eq!(
            call(&mut host, "cas", json!({"name": "c", "expected": 3, "value": 9})),
            Ok(json!({"value": 9, "swapped": true}))
        );
        assert!(call(&mut host, "frob", json!({"name": "c"})).is_err());
        assert!(call(&mut host, "add", json!({"name": "a/b"})).is_err());
        assert!(host.invoke::<Counter>(1, "add", b"not json").is_err());
    }
}
