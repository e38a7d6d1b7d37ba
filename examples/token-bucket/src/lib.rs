//! An example recipe, not built into Cairn: a token-bucket rate limiter that every client of a
//! cluster shares. The README builds it and deploys it with `cairn recipe deploy`.
//!
//! A bucket holds up to `capacity` tokens and gains `rate` tokens a second. Time is the
//! leader's timestamp on the log entry (`Host::time_ms`), the same on every replica, so every
//! node computes the same level. Levels are kept in thousandths of a token, in integers.
//!
//! State: `/<bucket>` holds `{"capacity": C, "rate": R, "milli": M, "at_ms": T}`: the level `M`
//! (thousandths) at time `T`.
//!
//! Ops (JSON):
//! - `take {"bucket": B, "capacity": C, "rate": R, "tokens": K}` → `{"granted": true,
//!   "remaining": N}` or `{"granted": false, "remaining": N, "retry_after_ms": W}`. Capacity and
//!   rate are set by the first call and may be changed by a later one; K defaults to 1.
//! - `status {"bucket": B}` → `{"capacity": C, "rate": R, "tokens": N}`.

use cairn_recipe::{Host, Mode, Recipe, records};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug)]
pub struct TokenBucket;

#[derive(Deserialize)]
struct Args {
    bucket: String,
    #[serde(default)]
    capacity: Option<u64>,
    #[serde(default)]
    rate: Option<u64>,
    #[serde(default = "one")]
    tokens: u64,
}

fn one() -> u64 {
    1
}

/// The largest bucket: keeps every level in thousandths well inside a u64.
const CAPACITY_MAX: u64 = 1 << 40;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Bucket {
    capacity: u64,
    rate: u64,
    milli: u64,
    at_ms: u64,
}

impl Bucket {
    /// The bucket at `now_ms`, refilled for the time since it was last written.
    fn at(self, now_ms: u64) -> Bucket {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        // `rate` tokens a second is `rate` thousandths a millisecond.
        let gained = elapsed.saturating_mul(self.rate);
        let milli = self.milli.saturating_add(gained).min(self.capacity * 1000);
        Bucket { milli, at_ms: now_ms.max(self.at_ms), ..self }
    }
}

impl Recipe for TokenBucket {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        let args: Args = serde_json::from_slice(args).map_err(|e| format!("bad arguments: {e}"))?;
        let path = records::entity_path("bucket", &args.bucket)?;
        let now = host.time_ms();
        let stored: Option<Bucket> = records::read(host, &path)?;
        let reply = match op {
            "take" => {
                let mut bucket = match (stored, args.capacity, args.rate) {
                    (Some(bucket), capacity, rate) => Bucket {
                        capacity: capacity.unwrap_or(bucket.capacity),
                        rate: rate.unwrap_or(bucket.rate),
                        ..bucket.at(now)
                    },
                    (None, Some(capacity), Some(rate)) => {
                        Bucket { capacity, rate, milli: capacity.saturating_mul(1000), at_ms: now }
                    }
                    (None, _, _) => {
                        return Err(format!("{} is new: give its capacity and rate", args.bucket));
                    }
                };
                if bucket.capacity == 0 || bucket.capacity > CAPACITY_MAX {
                    return Err(format!("capacity must be 1 to {CAPACITY_MAX}"));
                }
                bucket.milli = bucket.milli.min(bucket.capacity * 1000);
                let wanted = args.tokens.saturating_mul(1000);
                let reply = if args.tokens > bucket.capacity {
                    return Err(format!(
                        "{} tokens can never be granted by a bucket of {}",
                        args.tokens, bucket.capacity
                    ));
                } else if bucket.milli >= wanted {
                    bucket.milli -= wanted;
                    json!({ "granted": true, "remaining": bucket.milli / 1000 })
                } else if bucket.rate == 0 {
                    json!({ "granted": false, "remaining": bucket.milli / 1000, "retry_after_ms": null })
                } else {
                    let short = wanted - bucket.milli;
                    let wait = short.div_ceil(bucket.rate);
                    json!({ "granted": false, "remaining": bucket.milli / 1000, "retry_after_ms": wait })
                };
                if stored.is_some() {
                    records::write(host, &path, &bucket)?;
                } else {
                    records::create(host, &path, &bucket, Mode::Persistent, false)?;
                }
                reply
            }
            "status" => {
                let bucket = stored.ok_or_else(|| format!("no bucket {}", args.bucket))?.at(now);
                json!({ "capacity": bucket.capacity, "rate": bucket.rate, "tokens": bucket.milli / 1000 })
            }
            other => return Err(format!("unknown op {other:?}; token-bucket knows take, status")),
        };
        Ok(reply.to_string().into_bytes())
    }
}

cairn_recipe::export!(TokenBucket);

#[cfg(test)]
mod tests {
    use cairn_recipe::testing::MemoryHost;
    use serde_json::Value;

    use super::*;

    fn take(host: &mut MemoryHost, tokens: u64) -> Value {
        let args = json!({"bucket": "api", "capacity": 5, "rate": 2, "tokens": tokens});
        let reply = host
            .invoke::<TokenBucket>(1, "take", args.to_string().as_bytes())
            .expect("as the test set up");
        serde_json::from_slice(&reply).expect("as the test set up")
    }

    #[test]
    fn grants_up_to_capacity_then_refills_with_time() {
        let mut host = MemoryHost::default();
        host.time_ms = 10_000;
        assert_eq!(take(&mut host, 3), json!({"granted": true, "remaining": 2}));
        assert_eq!(take(&mut host, 2), json!({"granted": true, "remaining": 0}));
        assert_eq!(
            take(&mut host, 1),
            json!({"granted": false, "remaining": 0, "retry_after_ms": 500})
        );
        host.time_ms += 500;
        assert_eq!(take(&mut host, 1), json!({"granted": true, "remaining": 0}));
        host.time_ms += 60_000;
        assert_eq!(take(&mut host, 1), json!({"granted": true, "remaining": 4}), "capped at 5");
        assert!(host.invoke::<TokenBucket>(1, "take", br#"{"bucket":"api","tokens":6}"#).is_err());
        assert!(host.invoke::<TokenBucket>(1, "take", br#"{"bucket":"new"}"#).is_err());
    }
}
