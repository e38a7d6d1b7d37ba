//! The counter recipe: named 64-bit counters in one namespace, each the znode `/<name>` holding
//! its value as decimal ASCII (a missing counter reads as 0).
//!
//! Ops and answers are `cairn_builtins::counter`'s types (see `sdk/wire/RECIPES.md` for the
//! protocol in words).

use cairn_builtins::counter::{Add, Cas, CasReply, Get, ValueReply};
use cairn_builtins::{Op, serve};
use cairn_recipe::{Host, Recipe};

#[derive(Debug)]
pub struct Counter;

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

fn write(host: &mut dyn Host, path: &str, value: i64) -> Result<(), String> {
    host.put(path, value.to_string().as_bytes()).map_err(|e| e.to_string())
}

/// `get`: the value.
fn get(host: &mut dyn Host, args: Get) -> Result<ValueReply, String> {
    let path = path(&args.name)?;
    Ok(ValueReply { value: read(host, &path)? })
}

/// `add`: the value after adding, written even when `delta` is 0.
fn add(host: &mut dyn Host, args: Add) -> Result<ValueReply, String> {
    let path = path(&args.name)?;
    let value = read(host, &path)?.checked_add(args.delta).ok_or("counter overflow")?;
    write(host, &path, value)?;
    Ok(ValueReply { value })
}

/// `cas`: `value` if the counter was `expected`, else the counter as it is.
fn cas(host: &mut dyn Host, args: Cas) -> Result<CasReply, String> {
    let path = path(&args.name)?;
    let current = read(host, &path)?;
    let swapped = current == args.expected;
    if swapped {
        write(host, &path, args.value)?;
    }
    Ok(CasReply { value: if swapped { args.value } else { current }, swapped })
}

impl Recipe for Counter {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        match op {
            Add::NAME => serve(args, |args| add(host, args)),
            Get::NAME => serve(args, |args| get(host, args)),
            Cas::NAME => serve(args, |args| cas(host, args)),
            other => Err(format!("unknown op {other:?}; counter knows add, get, cas")),
        }
    }
}

cairn_recipe::export!(Counter);

#[cfg(test)]
mod tests {
    use cairn_recipe::testing::MemoryHost;
    use serde_json::json;

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
