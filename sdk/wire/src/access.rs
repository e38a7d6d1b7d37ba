//! Access control on the wire: principals, the ACL a znode carries, and per-principal quotas.
//!
//! A connection speaks for one principal: the common name of the client certificate it
//! presented, the name of the token it authenticated with, or [`ANONYMOUS`]. A znode's ACL is a
//! list of entries, each granting a set of permissions ([`READ`], [`WRITE`], [`CREATE`],
//! [`DELETE`], [`ADMIN`], ZooKeeper's bits) to an identity: `world:anyone` (every principal,
//! the anonymous one included) or `user:NAME` (one principal). In a request, `auth:` stands for
//! the requester itself and is stored as its `user:` entry.

use serde::{Deserialize, Serialize};

/// Read the znode's data, stat, ACL-free metadata and children; watch it.
pub const READ: u32 = 1;
/// Set the znode's data.
pub const WRITE: u32 = 2;
/// Create children.
pub const CREATE: u32 = 4;
/// Delete children.
pub const DELETE: u32 = 8;
/// Set the znode's ACL.
pub const ADMIN: u32 = 16;
/// Every permission.
pub const ALL: u32 = READ | WRITE | CREATE | DELETE | ADMIN;

/// The principal of a connection that presented no certificate and no token.
pub const ANONYMOUS: &str = "anonymous";
/// The principal a cluster's first administrator has: the common name of the client certificate
/// a first start writes, and the administrator the replicated state starts with.
pub const BOOTSTRAP_ADMIN: &str = "admin";
/// The owner of the built-in recipes and of what the nodes do on their own (no client may
/// take the name).
pub const SYSTEM: &str = "system";

/// Most entries one ACL may have.
pub const ACL_ENTRIES_MAX: usize = 64;
/// Longest principal name, in bytes.
pub const PRINCIPAL_NAME_BYTES_MAX: usize = 128;

/// One entry of a znode's ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclEntry {
    /// `world`, `user`, or (in a request only) `auth`.
    pub scheme: String,
    /// `anyone` for `world`, a principal name for `user`, empty for `auth`.
    pub id: String,
    /// A bit set of [`READ`], [`WRITE`], [`CREATE`], [`DELETE`], [`ADMIN`].
    pub perms: u32,
}

impl AclEntry {
    /// Every permission for every principal (`world:anyone:cdrwa`).
    pub fn anyone(perms: u32) -> AclEntry {
        AclEntry { scheme: "world".into(), id: "anyone".into(), perms }
    }

    /// `perms` for the principal `name`.
    pub fn user(name: &str, perms: u32) -> AclEntry {
        AclEntry { scheme: "user".into(), id: name.into(), perms }
    }

    /// Parses `scheme:id:perms` (`user:alice:rw`, `world:anyone:r`, `auth::cdrwa`).
    pub fn parse(text: &str) -> Result<AclEntry, String> {
        let mut parts = text.rsplitn(2, ':');
        let (Some(letters), Some(identity)) = (parts.next(), parts.next()) else {
            return Err(format!("{text:?} is not scheme:id:perms"));
        };
        let (scheme, id) =
            identity.split_once(':').ok_or_else(|| format!("{text:?} is not scheme:id:perms"))?;
        let entry = AclEntry { scheme: scheme.into(), id: id.into(), perms: parse_perms(letters)? };
        entry.validate()?;
        Ok(entry)
    }

    /// Parses a comma-separated list of entries.
    pub fn parse_list(text: &str) -> Result<Vec<AclEntry>, String> {
        let entries = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(AclEntry::parse)
            .collect::<Result<Vec<_>, _>>()?;
        validate_acl(&entries)?;
        Ok(entries)
    }

    /// Whether the entry is well formed: a known scheme with an id it allows, and permissions
    /// within [`ALL`].
    pub fn validate(&self) -> Result<(), String> {
        if self.perms & !ALL != 0 {
            return Err(format!("permissions {:#x} outside cdrwa", self.perms));
        }
        match self.scheme.as_str() {
            "world" if self.id == "anyone" => Ok(()),
            "world" => Err(format!("world:{} — the world scheme's only id is anyone", self.id)),
            "user" => validate_principal_name(&self.id)
                .or_else(|why| if self.id == ANONYMOUS { Ok(()) } else { Err(why) }),
            "auth" if self.id.is_empty() => Ok(()),
            "auth" => Err("the auth scheme takes no id (auth::perms)".into()),
            other => Err(format!("unknown ACL scheme {other:?} (world, user or auth)")),
        }
    }
}

impl std::fmt::Display for AclEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.scheme, self.id, perms_letters(self.perms))
    }
}

/// Whether an ACL is well formed as a whole: every entry, and not too many.
pub fn validate_acl(acl: &[AclEntry]) -> Result<(), String> {
    if acl.len() > ACL_ENTRIES_MAX {
        return Err(format!("{} ACL entries, limit {ACL_ENTRIES_MAX}", acl.len()));
    }
    acl.iter().try_for_each(AclEntry::validate)
}

/// `cdrwa`-style letters to a permission bit set.
pub fn parse_perms(letters: &str) -> Result<u32, String> {
    letters.chars().try_fold(0, |perms, letter| {
        let bit = match letter {
            'r' => READ,
            'w' => WRITE,
            'c' => CREATE,
            'd' => DELETE,
            'a' => ADMIN,
            other => return Err(format!("{other:?} is not a permission (c, d, r, w, a)")),
        };
        Ok(perms | bit)
    })
}

/// A permission bit set as `cdrwa`-style letters, in that order.
pub fn perms_letters(perms: u32) -> String {
    [(CREATE, 'c'), (DELETE, 'd'), (READ, 'r'), (WRITE, 'w'), (ADMIN, 'a')]
        .iter()
        .filter(|(bit, _)| perms & bit != 0)
        .map(|(_, letter)| *letter)
        .collect()
}

/// Whether `name` may name a principal (a certificate's common name, a token's name): 1 to
/// [`PRINCIPAL_NAME_BYTES_MAX`] bytes of ASCII letters, digits and `.`, `_`, `-`, `@`, and not
/// a name the node keeps for itself ([`ANONYMOUS`], [`SYSTEM`]).
pub fn validate_principal_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > PRINCIPAL_NAME_BYTES_MAX {
        return Err(format!(
            "a principal name has 1 to {PRINCIPAL_NAME_BYTES_MAX} bytes, not {}",
            name.len()
        ));
    }
    if let Some(bad) =
        name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(format!("{bad:?} in principal name {name:?} (letters, digits, . _ - @)"));
    }
    if name == ANONYMOUS || name == SYSTEM {
        return Err(format!("{name:?} is kept for the node's own use"));
    }
    Ok(())
}

/// What a principal may hold, cluster-wide (sessions, znodes, bytes) or on each node
/// (connections, watches). Administrators are not bounded by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Live sessions, across the cluster.
    pub sessions: u64,
    /// Open connections, on each node.
    pub connections: u64,
    /// Watches registered by its sessions, on each node.
    pub watches: u64,
    /// Znodes it created that still exist (a recipe's count against whoever invoked it).
    pub znodes: u64,
    /// Bytes of path and data of those znodes.
    pub bytes: u64,
}

impl Quota {
    /// What a principal with no quota of its own may hold.
    pub const DEFAULT: Quota = Quota {
        sessions: 1_000,
        connections: 1_000,
        watches: 100_000,
        znodes: 100_000,
        bytes: 256 * 1024 * 1024,
    };
}

/// What a principal holds now, as a quota counts it: cluster-wide counts from the replicated
/// state, connections and watches on the node that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub sessions: u64,
    pub connections: u64,
    pub watches: u64,
    pub znodes: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_print_back() {
        let acl =
            AclEntry::parse_list("user:alice:rw, world:anyone:r,auth::cdrwa").expect("parses");
        assert_eq!(
            acl,
            vec![
                AclEntry::user("alice", READ | WRITE),
                AclEntry::anyone(READ),
                AclEntry { scheme: "auth".into(), id: String::new(), perms: ALL },
            ]
        );
        assert_eq!(acl[0].to_string(), "user:alice:rw");
        assert_eq!(acl[2].to_string(), "auth::cdrwa");
        // A user named with a dot or an @ still parses: the permissions are after the last colon.
        assert_eq!(
            AclEntry::parse("user:ops@example.com:r").expect("parses"),
            AclEntry::user("ops@example.com", READ)
        );
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        for bad in [
            "user:alice",
            "user:alice:rx",
            "world:bob:r",
            "ip:10.0.0.1:r",
            "auth:bob:r",
            "user::r",
            "user:system:r",
            "user:a b:r",
        ] {
            assert!(AclEntry::parse(bad).is_err(), "{bad} parsed");
        }
        // The anonymous principal can be named in an ACL, though no one can take its name.
        assert!(AclEntry::parse("user:anonymous:r").is_ok());
        assert!(validate_principal_name(ANONYMOUS).is_err());
        let too_many = vec![AclEntry::anyone(READ); ACL_ENTRIES_MAX + 1];
        assert!(validate_acl(&too_many).is_err());
        assert!(AclEntry { perms: 32, ..AclEntry::anyone(READ) }.validate().is_err());
    }
}
