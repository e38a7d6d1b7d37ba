//! The built-in recipes' protocols, defined once.
//!
//! Each built-in recipe has a module here with every op's arguments (a type implementing
//! [`Op`], whose [`Op::Reply`] is the answer), every notification it sends (a type implementing
//! [`Note`]) and the records it keeps in its namespace where a client reads them. The recipe
//! (the guest, built for wasm32-wasip2), the Rust client's handles and the tests all use these
//! types, so the three cannot drift apart; `sdk/wire/RECIPES.md` describes the same protocols
//! for clients in other languages.
//!
//! Everything travels as JSON objects. Arguments a recipe does not know are ignored; a field of
//! an answer or a notification that is missing or of the wrong type is an error for the
//! reader, never a default (a fencing token that silently became 0 would fence nothing).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// Declares `$args` the arguments of op `$name` of the calling module's recipe (its `RECIPE`),
/// answered with `$reply`.
macro_rules! op {
    ($args:ty, $name:literal, $reply:ty) => {
        impl $crate::Op for $args {
            const RECIPE: &'static str = RECIPE;
            const NAME: &'static str = $name;
            type Reply = $reply;
        }
    };
}

/// Declares `$note` a notification of the calling module's recipe.
macro_rules! note {
    ($note:ty) => {
        impl $crate::Note for $note {
            const RECIPE: &'static str = RECIPE;
        }
    };
}

pub mod barrier;
pub mod counter;
pub mod election;
pub mod fair_lock;
pub mod queue;
pub mod rw_lock;
pub mod semaphore;

/// One op of a built-in recipe: the value is its arguments.
pub trait Op: Serialize + DeserializeOwned {
    /// The recipe's name, as deployed.
    const RECIPE: &'static str;
    /// The op's name, as `invoke` takes it.
    const NAME: &'static str;
    /// What the op answers.
    type Reply: Serialize + DeserializeOwned;
}

/// A notification a built-in recipe sends to a session.
pub trait Note: Serialize + DeserializeOwned {
    /// The recipe that sends it.
    const RECIPE: &'static str;
}

/// JSON for a protocol value. The types of this crate have string keys and derived
/// serializers only, for which serde_json cannot fail.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("the protocol types always serialize to JSON")
}

/// A protocol value from JSON: the error says what was wrong with it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Runs op `O` for a recipe: decodes its arguments, calls `run` and encodes the answer. The
/// error of bad arguments names the op.
pub fn serve<O: Op>(
    args: &[u8],
    run: impl FnOnce(O) -> Result<O::Reply, String>,
) -> Result<Vec<u8>, String> {
    // serde would read a struct from an array too, making the fields' order part of the
    // protocol: arguments are an object.
    if args.trim_ascii_start().first() != Some(&b'{') {
        return Err(format!("bad arguments to {}: not a JSON object", O::NAME));
    }
    let args = decode::<O>(args).map_err(|e| format!("bad arguments to {}: {e}", O::NAME))?;
    run(args).map(|reply| encode(&reply))
}

/// The default of `wait` in the ops that may wait.
fn yes() -> bool {
    true
}

/// For `Option` fields that must be present, `null` or not: serde's derive would read a
/// missing one as `None`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(deserializer)
}

#[cfg(test)]
mod tests {
    use super::fair_lock::{Acquire, AcquireReply, Status, StatusReply};
    use super::*;

    #[test]
    fn arguments_default_and_answers_are_strict() {
        let acquire: Acquire = decode(br#"{"lock": "l", "extra": 1}"#).expect("extra ignored");
        assert_eq!(acquire, Acquire { lock: "l".into(), wait: true });
        assert!(decode::<Status>(br#"{}"#).is_err(), "a lock is needed");
        let status: StatusReply =
            decode(br#"{"holder": null, "token": 3, "queue": []}"#).expect("null holder");
        assert_eq!(status.holder, None);
        assert!(decode::<StatusReply>(br#"{"token": 3, "queue": []}"#).is_err(), "missing holder");
        assert!(decode::<AcquireReply>(br#"{"granted": true, "token": "7"}"#).is_err());
        assert_eq!(
            String::from_utf8(encode(&AcquireReply::queued(2, "w-1".into()))).expect("utf-8"),
            r#"{"granted":false,"position":2,"waiter":"w-1"}"#
        );
    }

    #[test]
    fn bad_arguments_name_the_op() {
        let error = serve::<Acquire>(b"{", |_| unreachable!("not called")).expect_err("bad");
        assert!(error.starts_with("bad arguments to acquire"), "{error}");
        let array = serve::<Acquire>(br#"["l", false]"#, |_| unreachable!("not called"));
        assert_eq!(array.expect_err("an array"), "bad arguments to acquire: not a JSON object");
        let spaced = serve::<Acquire>(b" \n{\"lock\": \"l\"}", |args| {
            assert_eq!(args.lock, "l");
            Ok(AcquireReply::busy())
        });
        assert_eq!(spaced.expect("an object"), br#"{"granted":false}"#);
    }
}
