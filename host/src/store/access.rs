//! Who may do what, as the replicated state decides it: the principal each logged write speaks
//! for, the administrators, the token hashes, the quotas, and the ACL checks.
//!
//! Request path: the client front end (`api`) learns a connection's principal from its client
//! certificate or an `authenticate` request and puts it on every [`Write`](super::Write) it
//! proposes; `apply` resolves it here against the state as of the entry ([`AccessTable::caller`])
//! and checks each znode's ACL, so every replica makes the same decision. Reads are checked by
//! the front end against its own applied state with the same functions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cairn_wire::access::{ANONYMOUS, BOOTSTRAP_ADMIN, SYSTEM, validate_principal_name};
use cairn_wire::{AclEntry, ApiError, ErrorCode, Quota};
use serde::{Deserialize, Serialize};

/// A znode's ACL. Shared: a child that names no ACL takes its parent's, and copies of the tree
/// copy no ACL.
pub type Acl = Arc<Vec<AclEntry>>;

/// Who a write (or a read) speaks for, as the front end that received it knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Principal {
    /// The node itself: its TTL reaper, session expiry, built-in recipes. Never a client's.
    System,
    /// A connection with no certificate and no token.
    Anonymous,
    /// The common name of a client certificate the cluster's CA signed.
    Certificate(String),
    /// A token's principal, with the token's hash: the token must still be the one the cluster
    /// keeps for `name` when the write applies.
    Token { name: String, hash: TokenHash },
    /// A ZooKeeper digest identity a connection proved by its password (`addauth digest
    /// user:password`), named as [`digest_principal`] names it.
    Digest(String),
}

/// The principal name of ZooKeeper's digest identity `user:base64(sha1(user:password))`:
/// `user@digest.<the SHA-1 in hex>`, or `None` if it would be too long for a principal name.
/// A user name with characters a principal name cannot carry (ZooKeeper's may hold any but
/// `:`) is written as `@` and its UTF-8 bytes in hex, which no plain name starts with.
/// ZooKeeper's ACL entries `digest:user:hash` name the same principal.
pub fn digest_principal(user: &str, sha1: &[u8]) -> Option<String> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let plain = !user.is_empty()
        && user.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let user = if plain { user.to_string() } else { format!("@{}", hex(user.as_bytes())) };
    let name = format!("{user}@digest.{}", hex(sha1));
    cairn_wire::access::validate_principal_name(&name).ok().map(|()| name)
}

/// The ZooKeeper user name and the hash (in hex) of a principal [`digest_principal`] named,
/// if it is one.
pub fn digest_user(principal: &str) -> Option<(String, &str)> {
    let (user, hash) = principal.rsplit_once("@digest.")?;
    let Some(encoded) = user.strip_prefix('@') else { return Some((user.to_string(), hash)) };
    Some((String::from_utf8(from_hex(encoded)?).ok()?, hash))
}

/// The bytes a string of hex digit pairs stands for, if it is one.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len()).step_by(2).map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok()).collect()
}

impl Principal {
    /// The name ACLs and quotas know the principal by.
    pub fn name(&self) -> &str {
        match self {
            Principal::System => SYSTEM,
            Principal::Anonymous => ANONYMOUS,
            Principal::Certificate(name)
            | Principal::Token { name, .. }
            | Principal::Digest(name) => name,
        }
    }
}

/// The SHA-256 of a token: all the cluster keeps of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"cairn token\0");
        hasher.update(token.as_bytes());
        TokenHash(hasher.finalize().into())
    }
}

/// A principal resolved against the state: what the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
    /// An administrator, or the node itself: passes every ACL and quota.
    pub admin: bool,
}

impl Caller {
    /// The node itself.
    pub fn system() -> Caller {
        Caller { name: SYSTEM.into(), admin: true }
    }

    /// Whether `acl` grants this caller every bit of `perms`.
    pub fn allows(&self, acl: &[AclEntry], perms: u32) -> bool {
        if self.admin {
            return true;
        }
        let granted = acl
            .iter()
            .filter(|entry| match entry.scheme.as_str() {
                "world" => entry.id == "anyone",
                "user" => entry.id == *self.name,
                _ => false,
            })
            .fold(0, |granted, entry| granted | entry.perms);
        granted & perms == perms
    }

    /// `no-auth` at `path` unless `acl` grants `perms`.
    pub fn require(&self, acl: &[AclEntry], perms: u32, path: &str) -> Result<(), ApiError> {
        if self.allows(acl, perms) {
            return Ok(());
        }
        Err(ApiError::at(ErrorCode::NoAuth, path).with_detail(format!(
            "{} may not {} here",
            self.name,
            what(perms)
        )))
    }

    /// `no-auth` unless this caller is an administrator.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.admin {
            return Ok(());
        }
        Err(ApiError::new(ErrorCode::NoAuth)
            .with_detail(format!("{what} needs an administrator; {} is not one", self.name)))
    }

    /// The ACL a create stores: `requested` with `auth` entries made this caller's own, or the
    /// parent's when none is requested.
    pub fn acl_to_store(
        &self,
        requested: Option<&[AclEntry]>,
        parent: &Acl,
        path: &str,
    ) -> Result<Acl, ApiError> {
        let Some(requested) = requested else { return Ok(parent.clone()) };
        cairn_wire::access::validate_acl(requested)
            .map_err(|why| ApiError::at(ErrorCode::InvalidAcl, path).with_detail(why))?;
        let mut stored: Vec<AclEntry> = Vec::with_capacity(requested.len());
        for entry in requested {
            let entry = if entry.scheme == "auth" {
                if *self.name == *ANONYMOUS {
                    return Err(ApiError::at(ErrorCode::InvalidAcl, path)
                        .with_detail("auth:: names the requester, and this one is anonymous"));
                }
                AclEntry::user(&self.name, entry.perms)
            } else {
                entry.clone()
            };
            if !stored.contains(&entry) {
                stored.push(entry);
            }
        }
        Ok(Arc::new(stored))
    }
}

/// What a set of permission bits allows, for error details.
fn what(perms: u32) -> &'static str {
    match perms {
        cairn_wire::access::READ => "read",
        cairn_wire::access::WRITE => "write",
        cairn_wire::access::CREATE => "create children",
        cairn_wire::access::DELETE => "delete children",
        cairn_wire::access::ADMIN => "change the ACL",
        _ => "do this",
    }
}

/// The ACL of the root of a new tree: nobody but administrators, until one grants more.
pub fn root_acl() -> Acl {
    Arc::new(Vec::new())
}

/// Most tokens a cluster keeps (one per principal).
pub const TOKENS_MAX: usize = 10_000;
/// Most administrators.
pub const ADMINS_MAX: usize = 64;
/// Most principals with a quota of their own.
pub const QUOTAS_MAX: usize = 10_000;

/// The replicated access state: administrators, token hashes, quotas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTable {
    pub admins: BTreeSet<String>,
    /// Each principal's token, by hash. A principal has at most one.
    pub tokens: BTreeMap<String, TokenHash>,
    /// Quotas set for principals; [`Quota::DEFAULT`] for the rest.
    pub quotas: BTreeMap<String, Quota>,
}

impl Default for AccessTable {
    fn default() -> Self {
        AccessTable {
            admins: [BOOTSTRAP_ADMIN.to_string()].into(),
            tokens: BTreeMap::new(),
            quotas: BTreeMap::new(),
        }
    }
}

impl AccessTable {
    /// Resolves who a write speaks for, as of this state: a token must still be the one kept
    /// for its name (`auth-failed` once revoked).
    pub fn caller(&self, principal: &Principal) -> Result<Caller, ApiError> {
        match principal {
            Principal::System => Ok(Caller::system()),
            Principal::Token { name, hash } if self.tokens.get(name) != Some(hash) => {
                Err(ApiError::new(ErrorCode::AuthFailed)
                    .with_detail(format!("the token for {name} has been revoked")))
            }
            other => {
                let name = other.name();
                Ok(Caller { name: name.into(), admin: self.admins.contains(name) })
            }
        }
    }

    /// The principal a token names, if the cluster knows it.
    pub fn token_owner(&self, hash: &TokenHash) -> Option<&str> {
        self.tokens.iter().find(|(_, kept)| *kept == hash).map(|(name, _)| name.as_str())
    }

    /// What `name` may hold.
    pub fn quota(&self, name: &str) -> Quota {
        self.quotas.get(name).copied().unwrap_or(Quota::DEFAULT)
    }

    /// Records a token for `name` (the caller checked the name). A principal has one token:
    /// revoke it to issue another.
    pub fn add_token(&mut self, name: &str, hash: TokenHash) -> Result<(), ApiError> {
        validate_principal_name(name)
            .map_err(|why| ApiError::new(ErrorCode::InvalidArgument).with_detail(why))?;
        if self.tokens.contains_key(name) {
            return Err(ApiError::new(ErrorCode::NodeExists)
                .with_detail(format!("{name} has a token: revoke it first")));
        }
        if self.tokens.len() >= TOKENS_MAX {
            return Err(ApiError::new(ErrorCode::QuotaExceeded)
                .with_detail(format!("the cluster keeps {TOKENS_MAX} tokens, its limit")));
        }
        self.tokens.insert(name.to_string(), hash);
        Ok(())
    }

    pub fn set_admin(&mut self, name: &str, admin: bool) -> Result<(), ApiError> {
        validate_principal_name(name)
            .map_err(|why| ApiError::new(ErrorCode::InvalidArgument).with_detail(why))?;
        if admin {
            if !self.admins.contains(name) && self.admins.len() >= ADMINS_MAX {
                return Err(ApiError::new(ErrorCode::QuotaExceeded)
                    .with_detail(format!("{ADMINS_MAX} administrators, the limit")));
            }
            self.admins.insert(name.to_string());
        } else {
            if self.admins.len() == 1 && self.admins.contains(name) {
                return Err(ApiError::new(ErrorCode::InvalidArgument)
                    .with_detail(format!("{name} is the last administrator")));
            }
            self.admins.remove(name);
        }
        Ok(())
    }

    pub fn set_quota(&mut self, name: &str, quota: Quota) -> Result<(), ApiError> {
        if name != ANONYMOUS {
            validate_principal_name(name)
                .map_err(|why| ApiError::new(ErrorCode::InvalidArgument).with_detail(why))?;
        }
        if !self.quotas.contains_key(name) && self.quotas.len() >= QUOTAS_MAX {
            return Err(ApiError::new(ErrorCode::QuotaExceeded)
                .with_detail(format!("{QUOTAS_MAX} principals have quotas, the limit")));
        }
        self.quotas.insert(name.to_string(), quota);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cairn_wire::access::{ALL, CREATE, READ, WRITE};

    use super::*;

    fn caller(name: &str) -> Caller {
        Caller { name: name.into(), admin: false }
    }

    #[test]
    fn entries_grant_what_they_say_to_whom_they_say() {
        let acl = vec![AclEntry::user("alice", READ | WRITE), AclEntry::anyone(CREATE)];
        assert!(caller("alice").allows(&acl, READ | WRITE));
        assert!(caller("alice").allows(&acl, CREATE), "world entries count for everyone");
        assert!(!caller("bob").allows(&acl, READ));
        assert!(caller("bob").allows(&acl, CREATE));
        assert!(!caller(ANONYMOUS).allows(&acl, READ));
        assert!(caller(ANONYMOUS).allows(&acl, CREATE));
        // Bits from several entries add up.
        assert!(caller("alice").allows(&acl, READ | CREATE));
        // Nobody but an administrator passes an empty ACL.
        assert!(!caller("alice").allows(&[], READ));
        assert!(Caller { name: "root".into(), admin: true }.allows(&[], ALL));
        let refused = caller("bob").require(&acl, READ, "/a").expect_err("refused");
        assert_eq!(refused.code, ErrorCode::NoAuth);
        assert_eq!(refused.path.as_deref(), Some("/a"));
    }

    #[test]
    fn a_revoked_token_no_longer_speaks_for_anyone() {
        let mut table = AccessTable::default();
        let hash = TokenHash::of("secret");
        table.add_token("ci", hash).expect("added");
        let principal = Principal::Token { name: "ci".into(), hash };
        assert_eq!(table.caller(&principal).expect("known").name.as_ref(), "ci");
        assert_eq!(table.token_owner(&hash), Some("ci"));
        // A second token for the same name is refused; the first stays.
        assert!(table.add_token("ci", TokenHash::of("other")).is_err());
        table.tokens.remove("ci");
        assert_eq!(table.caller(&principal).expect_err("revoked").code, ErrorCode::AuthFailed);
        // A token that claims another name than the one it was issued for is refused too.
        table.add_token("ci", hash).expect("added again");
        let forged = Principal::Token { name: "admin".into(), hash };
        assert_eq!(table.caller(&forged).expect_err("forged").code, ErrorCode::AuthFailed);
    }

    #[test]
    fn the_first_administrator_is_the_bootstrap_one_and_the_last_cannot_go() {
        let mut table = AccessTable::default();
        let admin = table.caller(&Principal::Certificate(BOOTSTRAP_ADMIN.into())).expect("ok");
        assert!(admin.admin);
        assert!(!table.caller(&Principal::Anonymous).expect("ok").admin);
        assert!(table.set_admin(BOOTSTRAP_ADMIN, false).is_err());
        table.set_admin("ops", true).expect("added");
        table.set_admin(BOOTSTRAP_ADMIN, false).expect("another remains");
        assert!(table.set_admin(SYSTEM, true).is_err(), "system is not a client's name");
    }

    #[test]
    fn auth_entries_become_the_creators_own() {
        let parent: Acl = Arc::new(vec![AclEntry::anyone(READ)]);
        let alice = caller("alice");
        assert_eq!(alice.acl_to_store(None, &parent, "/a").expect("inherits"), parent);
        let auth = AclEntry { scheme: "auth".into(), id: String::new(), perms: ALL };
        let stored =
            alice.acl_to_store(Some(std::slice::from_ref(&auth)), &parent, "/a").expect("stored");
        assert_eq!(*stored, vec![AclEntry::user("alice", ALL)]);
        let refused = caller(ANONYMOUS).acl_to_store(Some(&[auth]), &parent, "/a");
        assert_eq!(refused.expect_err("anonymous").code, ErrorCode::InvalidAcl);
        let bad = AclEntry { scheme: "ip".into(), id: "1.2.3.4".into(), perms: READ };
        assert_eq!(
            alice.acl_to_store(Some(&[bad]), &parent, "/a").expect_err("bad").code,
            ErrorCode::InvalidAcl
        );
    }
}
