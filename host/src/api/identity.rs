//! Who a client connection speaks for, and how many connections each principal holds here.
//!
//! Request path: `stream::serve_connection` learns the principal from the client certificate
//! (`tls::client_principal`) when the handshake completes, takes a connection slot for it, and
//! shares the [`Identity`] with every stream of the connection; an `authenticate` request
//! replaces it with a token's principal. Each request reads the principal here and carries it
//! into the log ([`Write`](crate::store::Write)) or into the read checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cairn_wire::{ApiError, ErrorCode};

use crate::store::{DataTree, Principal};

/// Open connections per principal on this node.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    held: Mutex<HashMap<String, u64>>,
}

/// One connection counted against its principal; uncounted when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    name: String,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut held = self.counts.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.name) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.name);
            }
        }
    }
}

impl ConnectionCounts {
    /// Counts one more connection of `principal`, unless that takes it past its quota (as of
    /// `tree`; administrators are not bounded).
    pub fn take(
        self: &Arc<Self>,
        principal: &Principal,
        tree: &DataTree,
    ) -> Result<ConnectionSlot, ApiError> {
        let caller = tree.caller(principal)?;
        let name = principal.name().to_string();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(name.clone()).or_default();
        let quota = tree.access().quota(&name).connections;
        if !caller.admin && *count >= quota {
            return Err(ApiError::new(ErrorCode::QuotaExceeded)
                .with_detail(format!("{name} has {quota} connections open here, its quota")));
        }
        *count += 1;
        Ok(ConnectionSlot { counts: self.clone(), name })
    }

    /// How many connections `name` holds on this node.
    pub fn held_by(&self, name: &str) -> u64 {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).get(name).copied().unwrap_or(0)
    }
}

/// The principal one connection speaks for, shared by its streams.
#[derive(Debug)]
pub struct Identity {
    current: Mutex<(Principal, ConnectionSlot)>,
    /// A stream of the connection has opened or resumed a session: the principal is settled,
    /// since a session belongs to the principal that opened it.
    settled: AtomicBool,
}

impl Identity {
    pub fn new(principal: Principal, slot: ConnectionSlot) -> Identity {
        Identity { current: Mutex::new((principal, slot)), settled: AtomicBool::new(false) }
    }

    /// A stream of the connection now has a session: no more changes of principal.
    pub fn settle(&self) {
        self.settled.store(true, Ordering::Relaxed);
    }

    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed)
    }

    pub fn principal(&self) -> Principal {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).0.clone()
    }

    /// Speaks for `principal` from now on, counted by `slot` (the old slot is given back).
    pub fn replace(&self, principal: Principal, slot: ConnectionSlot) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = (principal, slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_count_against_their_principal_until_dropped() {
        let tree = DataTree::new();
        let counts = Arc::new(ConnectionCounts::default());
        let alice = Principal::Certificate("alice".into());
        let quota = cairn_wire::Quota::DEFAULT.connections;
        let slots: Vec<ConnectionSlot> =
            (0..quota).map(|_| counts.take(&alice, &tree).expect("within quota")).collect();
        let refused = counts.take(&alice, &tree).expect_err("past the quota");
        assert_eq!(refused.code, ErrorCode::QuotaExceeded);
        // Another principal is not held back by alice's connections.
        counts.take(&Principal::Anonymous, &tree).expect("bob's own quota");
        // The bootstrap administrator is not bounded.
        let admin = Principal::Certificate(cairn_wire::access::BOOTSTRAP_ADMIN.into());
        let admin_slots: Vec<ConnectionSlot> =
            (0..=quota).map(|_| counts.take(&admin, &tree).expect("unbounded")).collect();
        drop(slots);
        assert_eq!(counts.held_by("alice"), 0);
        counts.take(&alice, &tree).expect("room again");
        drop(admin_slots);
    }
}
