//! Commands: what one Raft log entry asks of the tree.

use cairn_wire::{AclEntry, CreateRequest, DeleteRequest, MultiOp, Quota, SetRequest};
use serde::{Deserialize, Serialize};

use super::{Principal, SecretHash, SessionId, TokenHash};

/// The payload of a log entry: the actions of one group commit, applied in order, each on its
/// own (one failing does not undo another), all under the entry's zxid; and the leader's
/// wall-clock time when it proposed them, the only time `apply` ever sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub time_ms: u64,
    pub writes: Vec<Write>,
}

/// One client's write: the action, the session of the stream that sent it (ephemeral creates
/// belong to it; session actions act on it), and the principal it speaks for (every replica
/// checks the same rights against the same state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    #[serde(default)]
    pub session: Option<SessionId>,
    pub principal: Principal,
    pub action: Action,
}

impl Write {
    /// A write of the node itself (the TTL reaper, session expiry, built-in recipes).
    pub fn system(action: Action) -> Write {
        Write { session: None, principal: Principal::System, action }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create(CreateRequest),
    Set(SetRequest),
    Delete(DeleteRequest),
    Multi(Vec<MultiOp>),
    /// Replace a znode's ACL, if its aversion is `version` (when given).
    SetAcl {
        path: String,
        acl: Vec<AclEntry>,
        version: Option<u32>,
    },
    /// Keep a token's hash for principal `name`; the proposing node answers its client with
    /// the token.
    CreateToken {
        name: String,
        hash: TokenHash,
    },
    RevokeToken {
        name: String,
    },
    SetAdmin {
        name: String,
        admin: bool,
    },
    SetQuota {
        name: String,
        quota: Quota,
    },
    /// Delete every TTL znode whose time has come, as of the entry's time.
    ReapTtl,
    /// Open a session. The node that proposes it chose the secret and keeps it to answer its
    /// client; the entry carries only its hash.
    OpenSession {
        timeout_ms: u64,
        secret_hash: SecretHash,
    },
    /// End the write's session at its client's request.
    CloseSession,
    /// End a session the leader has not heard from within its timeout.
    ExpireSession {
        session: SessionId,
    },
    /// Deploy a recipe component under a name; the next version when none is given.
    DeployRecipe {
        name: String,
        version: Option<u32>,
        #[serde(with = "serde_bytes")]
        component: Vec<u8>,
        /// The recipe runtime of the node that proposed it: the first deploy records it as the
        /// cluster's, the same on every replica whatever runtime each one runs.
        runtime: String,
        /// Who a new name belongs to; the deployer when absent.
        owner: Option<String>,
    },
    RetireRecipe {
        name: String,
        version: u32,
    },
    /// Stop running recipe code, for a change of runtime: invokes and deploys are refused and
    /// session-end hooks wait, until `AdoptRecipeRuntime`.
    FreezeRecipes,
    /// Run recipes on `runtime` from this entry on (every member runs it: the proposing node
    /// checked), ending a freeze and running the hooks it deferred.
    AdoptRecipeRuntime {
        runtime: String,
    },
    /// Run one operation of a recipe (the named version, or the newest).
    InvokeRecipe {
        name: String,
        version: Option<u32>,
        op: String,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
    },
}

impl Command {
    /// Whether applying it may run recipe code (an invocation, a deploy that compiles, a
    /// session end that calls hooks): blocking work, kept off the async runtime's workers.
    pub fn may_run_recipes(&self) -> bool {
        self.writes.iter().any(|write| {
            matches!(
                write.action,
                Action::DeployRecipe { .. }
                    | Action::InvokeRecipe { .. }
                    | Action::AdoptRecipeRuntime { .. }
                    | Action::CloseSession
                    | Action::ExpireSession { .. }
            )
        })
    }
}

impl Action {
    /// Roughly how many bytes the action adds to a log entry, to bound group commits.
    pub fn approximate_bytes(&self) -> usize {
        const OVERHEAD_BYTES: usize = 32;
        let op_bytes = |op: &MultiOp| match op {
            MultiOp::Create(create) => create.path.len() + create.data.len(),
            MultiOp::Set(set) => set.path.len() + set.data.len(),
            MultiOp::Delete(delete) => delete.path.len(),
            MultiOp::Check { path, .. } => path.len(),
        } + OVERHEAD_BYTES;
        OVERHEAD_BYTES
            + match self {
                Action::Create(create) => create.path.len() + create.data.len(),
                Action::Set(set) => set.path.len() + set.data.len(),
                Action::Delete(delete) => delete.path.len(),
                Action::Multi(ops) => ops.iter().map(op_bytes).sum(),
                Action::DeployRecipe { name, component, .. } => name.len() + component.len(),
                Action::InvokeRecipe { name, op, args, .. } => name.len() + op.len() + args.len(),
                Action::RetireRecipe { name, .. } => name.len(),
                Action::AdoptRecipeRuntime { runtime } => runtime.len(),
                Action::SetAcl { path, acl, .. } => {
                    path.len() + acl.iter().map(|e| e.id.len() + OVERHEAD_BYTES).sum::<usize>()
                }
                Action::CreateToken { name, .. }
                | Action::RevokeToken { name }
                | Action::SetAdmin { name, .. }
                | Action::SetQuota { name, .. } => name.len(),
                Action::FreezeRecipes
                | Action::ReapTtl
                | Action::OpenSession { .. }
                | Action::CloseSession
                | Action::ExpireSession { .. } => 0,
            }
    }
}
