//! The `/zookeeper` subtree every ZooKeeper server has: `/zookeeper`, `/zookeeper/config` (the
//! dynamic configuration: empty, as on a standalone ZooKeeper, since Cairn's membership is its
//! own) and `/zookeeper/quota` (empty: Cairn's quotas are per principal). They are not in
//! Cairn's tree: the front end answers reads of them itself, refuses writes, and shows
//! `zookeeper` among the root's children. Pure, as `translate` is; the connection (zk/mod.rs)
//! asks here before it plans a request.

use cairn_wire::access::{ADMIN, CREATE, DELETE, READ, WRITE};
use cairn_wire::{AclEntry, ApiError, ChildEntry, ErrorCode, Reply, Stat};

use super::proto::{Request, code};

/// The subtree's root, and its name among the root's children.
const ROOT: &str = "/zookeeper";
const NAME: &str = "zookeeper";
const CONFIG: &str = "/zookeeper/config";
const QUOTA: &str = "/zookeeper/quota";

/// Whether `path` is in the subtree.
fn is_system(path: &str) -> bool {
    path.strip_prefix(ROOT).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The stat and children of a znode of the subtree.
fn node(path: &str) -> Result<(Stat, &'static [&'static str]), ApiError> {
    match path {
        ROOT => Ok((Stat { num_children: 2, ..Stat::default() }, &["config", "quota"])),
        CONFIG | QUOTA => Ok((Stat::default(), &[])),
        _ => Err(ApiError::at(ErrorCode::NoNode, path)),
    }
}

/// The ACL of a znode of the subtree, as ZooKeeper's: the configuration is read-only.
fn acl_of(path: &str) -> Vec<AclEntry> {
    let perms = match path {
        CONFIG => READ,
        _ => READ | WRITE | CREATE | DELETE | ADMIN,
    };
    vec![AclEntry::anyone(perms)]
}

/// The answer to `request` if it reads the subtree (its watches are not kept: nothing there
/// changes).
pub fn read(request: &Request) -> Option<Result<Reply, ApiError>> {
    match request {
        Request::GetData { path, .. } if is_system(path) => {
            Some(node(path).map(|(stat, _)| Reply::Data { data: Vec::new(), null: false, stat }))
        }
        Request::Exists { path, .. } if is_system(path) => {
            Some(Ok(Reply::Exists { stat: node(path).ok().map(|(stat, _)| stat) }))
        }
        Request::GetChildren { path, .. } if is_system(path) => {
            Some(node(path).map(|(stat, children)| {
                Reply::Children {
                    stat,
                    children: children
                        .iter()
                        .map(|name| ChildEntry { name: name.to_string(), stat: None })
                        .collect(),
                }
            }))
        }
        Request::GetAcl { path } if is_system(path) => {
            Some(node(path).map(|(stat, _)| Reply::Acl { acl: acl_of(path), stat }))
        }
        _ => None,
    }
}

/// The error code a write of the subtree is answered with, if `request` writes it (a multi
/// that writes it anywhere is refused whole).
pub fn refused_write(request: &Request) -> Option<i32> {
    match request {
        Request::Create(create) if create.path == ROOT => Some(code::NODE_EXISTS),
        // ZooKeeper would take it (as `setquota` does under /zookeeper/quota); Cairn keeps
        // nothing there.
        Request::Create(create) if is_system(&create.path) => Some(code::NO_AUTH),
        // As ZooKeeper answers a delete of its own znodes.
        Request::Delete { path, .. } if is_system(path) => Some(code::BAD_ARGUMENTS),
        Request::SetData { path, .. } | Request::SetAcl { path, .. } if is_system(path) => {
            Some(code::NO_AUTH)
        }
        Request::Multi(ops) => ops.iter().find_map(refused_write),
        _ => None,
    }
}

/// `reply` to a read of the root as ZooKeeper gives it, with `zookeeper` among the root's
/// children (unless the tree has a znode of that name already: `present`).
pub fn with_root_child(request: &Request, reply: &mut Reply, present: bool) {
    if present {
        return;
    }
    let stat = match (request, reply) {
        (Request::GetChildren { path, .. }, Reply::Children { stat, children }) if path == "/" => {
            let at = children.partition_point(|child| child.name.as_str() < NAME);
            children.insert(at, ChildEntry { name: NAME.to_string(), stat: None });
            stat
        }
        (Request::GetData { path, .. }, Reply::Data { stat, .. })
        | (Request::Exists { path, .. }, Reply::Exists { stat: Some(stat) })
        | (Request::GetAcl { path }, Reply::Acl { stat, .. })
            if path == "/" =>
        {
            stat
        }
        _ => return,
    };
    stat.num_children += 1;
}

#[cfg(test)]
mod tests {
    use super::super::proto::{Acl, Create, op};
    use super::*;

    fn get(path: &str) -> Request {
        Request::GetData { path: path.into(), watch: false }
    }

    #[test]
    fn the_subtree_reads_as_on_a_standalone_zookeeper() {
        let children = Request::GetChildren { path: ROOT.into(), watch: false, with_stat: true };
        match read(&children) {
            Some(Ok(Reply::Children { stat, children })) => {
                let names: Vec<&str> = children.iter().map(|c| c.name.as_str()).collect();
                assert_eq!(names, ["config", "quota"]);
                assert_eq!(stat.num_children, 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(read(&get(CONFIG)), Some(Ok(Reply::Data { data, .. })) if data.is_empty())
        );
        let missing = read(&get("/zookeeper/nothing")).expect("in the subtree");
        assert_eq!(missing.expect_err("no such znode").code, ErrorCode::NoNode);
        let exists = Request::Exists { path: "/zookeeper/nothing".into(), watch: true };
        assert!(matches!(read(&exists), Some(Ok(Reply::Exists { stat: None }))));
        assert!(read(&get("/zookeeperx")).is_none(), "a sibling is the tree's");
        assert!(read(&get("/app")).is_none());
        match read(&Request::GetAcl { path: CONFIG.into() }) {
            Some(Ok(Reply::Acl { acl, .. })) => assert_eq!(acl, vec![AclEntry::anyone(READ)]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writes_of_the_subtree_are_refused() {
        let create = |path: &str| {
            let acl = vec![Acl { perms: 31, scheme: "world".into(), id: "anyone".into() }];
            Request::Create(Create {
                op: op::CREATE,
                path: path.into(),
                data: None,
                acl,
                flags: 0,
                ttl_ms: None,
            })
        };
        assert_eq!(refused_write(&create(ROOT)), Some(code::NODE_EXISTS));
        assert_eq!(refused_write(&create("/zookeeper/quota/app")), Some(code::NO_AUTH));
        let delete = Request::Delete { path: QUOTA.into(), version: -1 };
        assert_eq!(refused_write(&delete), Some(code::BAD_ARGUMENTS));
        let set = Request::SetData { path: CONFIG.into(), data: None, version: -1 };
        assert_eq!(refused_write(&Request::Multi(vec![create("/a"), set])), Some(code::NO_AUTH));
        assert_eq!(refused_write(&create("/zookeeperx")), None);
    }

    #[test]
    fn the_root_shows_the_subtree() {
        let children = Request::GetChildren { path: "/".into(), watch: false, with_stat: true };
        let entry = |name: &str| ChildEntry { name: name.into(), stat: None };
        let mut reply = Reply::Children {
            stat: Stat { num_children: 2, ..Stat::default() },
            children: vec![entry("app"), entry("zz")],
        };
        with_root_child(&children, &mut reply, false);
        match reply {
            Reply::Children { stat, children } => {
                let names: Vec<&str> = children.iter().map(|c| c.name.as_str()).collect();
                assert_eq!(names, ["app", "zookeeper", "zz"]);
                assert_eq!(stat.num_children, 3);
            }
            other => panic!("{other:?}"),
        }
        let mut data = Reply::Data { data: Vec::new(), null: false, stat: Stat::default() };
        with_root_child(&get("/"), &mut data, true);
        assert!(matches!(data, Reply::Data { stat, .. } if stat.num_children == 0), "present");
        with_root_child(&get("/"), &mut data, false);
        assert!(matches!(data, Reply::Data { stat, .. } if stat.num_children == 1));
    }
}
