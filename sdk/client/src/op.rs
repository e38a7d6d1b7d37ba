//! Builders for the operations of a [`Client::multi`](crate::Client::multi).

use cairn_wire::{DeleteRequest, MultiOp, SetRequest};

use crate::CreateOptions;

/// Create a znode.
pub fn create(path: &str, data: impl Into<Vec<u8>>, options: CreateOptions) -> MultiOp {
    MultiOp::Create(options.request(path, data.into()))
}

/// Set a znode's data, optionally only at `version`.
pub fn set(path: &str, data: impl Into<Vec<u8>>, version: Option<u32>) -> MultiOp {
    MultiOp::Set(SetRequest {
        path: path.to_string(),
        data: data.into(),
        null_data: false,
        version,
    })
}

/// Delete a znode, optionally only at `version`.
pub fn delete(path: &str, version: Option<u32>) -> MultiOp {
    MultiOp::Delete(DeleteRequest { path: path.to_string(), version })
}

/// Fail the whole multi unless the znode is at `version`.
pub fn check(path: &str, version: u32) -> MultiOp {
    MultiOp::Check { path: path.to_string(), version: Some(version) }
}

/// Fail the whole multi unless the znode exists, whatever its version.
pub fn check_exists(path: &str) -> MultiOp {
    MultiOp::Check { path: path.to_string(), version: None }
}
