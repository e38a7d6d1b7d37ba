//! Applying the rights writes: a znode's ACL, tokens, administrators and quotas.

use cairn_wire::access::ADMIN;
use cairn_wire::{AclEntry, ApiError, ErrorCode, Quota, Reply, path};

use crate::store::paths::recipe_path;
use crate::store::txn::Txn;
use crate::store::{Caller, DataTree, Effects, TokenHash, acl_bytes};

impl DataTree {
    /// Keeps `hash` as `name`'s token. The proposing node puts the token in the reply; the
    /// entry never carried it.
    pub(super) fn create_token(
        &mut self,
        caller: &Caller,
        name: &str,
        hash: TokenHash,
    ) -> Result<Reply, ApiError> {
        caller.require_admin("issuing a token")?;
        self.access.add_token(name, hash)?;
        Ok(Reply::Token { name: name.to_string(), token: String::new() })
    }

    pub(super) fn revoke_token(
        &mut self,
        caller: &Caller,
        name: &str,
        effects: &mut Effects,
    ) -> Result<Reply, ApiError> {
        caller.require_admin("revoking a token")?;
        match self.access.tokens.remove(name) {
            Some(_) => {
                effects.access_changed = true;
                Ok(Reply::TokenRevoked {})
            }
            None => {
                Err(ApiError::new(ErrorCode::NoNode).with_detail(format!("{name} has no token")))
            }
        }
    }

    pub(super) fn set_admin(
        &mut self,
        caller: &Caller,
        name: &str,
        admin: bool,
        effects: &mut Effects,
    ) -> Result<Reply, ApiError> {
        caller.require_admin("changing who administers the cluster")?;
        self.access.set_admin(name, admin)?;
        effects.access_changed = true;
        Ok(Reply::Admins { admins: self.access.admins.iter().cloned().collect() })
    }

    pub(super) fn set_quota(
        &mut self,
        caller: &Caller,
        name: &str,
        quota: Quota,
    ) -> Result<Reply, ApiError> {
        caller.require_admin("setting a quota")?;
        self.access.set_quota(name, quota)?;
        Ok(Reply::Quota { name: name.to_string(), quota, usage: self.usage(name) })
    }
}

impl Txn<'_> {
    /// Replaces a znode's ACL.
    pub(super) fn set_acl(
        &mut self,
        path: &str,
        acl: &[AclEntry],
        version: Option<u32>,
    ) -> Result<cairn_wire::Stat, ApiError> {
        path::validate(path)?;
        if recipe_path(path).is_some_and(|(_, relative)| relative != "/") {
            return Err(ApiError::at(ErrorCode::InvalidArgument, path).with_detail(
                "a recipe's znodes are governed by its namespace root's ACL: set that one",
            ));
        }
        let Some(node) = self.tree.nodes.get(path) else {
            return Err(self.absent(path, ApiError::at(ErrorCode::NoNode, path)));
        };
        self.require(&node.acl, ADMIN, path)?;
        if let Some(expected) = version
            && expected != node.aversion
        {
            return Err(ApiError::at(ErrorCode::BadVersion, path)
                .with_detail(format!("expected ACL version {expected}, found {}", node.aversion)));
        }
        let acl = self.caller.acl_to_store(Some(acl), &node.acl, path)?;
        // The ACL counts as stored bytes, against the cluster's bound and the creator's quota.
        let (from, to) = (acl_bytes(&node.acl) as u64, acl_bytes(&acl) as u64);
        let creator = node.creator.clone();
        self.tree.check_room(path, 0, to.saturating_sub(from))?;
        self.check_quota(&creator, 0, to.saturating_sub(from), path)?;
        self.tree.resize(&creator, from, to);
        let node =
            self.tree.nodes.get_mut(path).ok_or_else(|| ApiError::at(ErrorCode::NoNode, path))?;
        node.acl = acl;
        node.aversion = node.aversion.wrapping_add(1);
        Ok(node.stat())
    }
}
