//! Applying `multi`: several znode operations as one write, all or none. The single
//! operations (create, set, delete, check) are the transaction's own primitives (store/txn.rs).

use cairn_wire::{ApiError, ErrorCode, MULTI_OPS_MAX, MultiOp, MultiResult, OpResult, Reply};

use crate::store::txn::Txn;

impl Txn<'_> {
    pub(super) fn multi(&mut self, ops: &[MultiOp]) -> Result<Reply, ApiError> {
        if ops.len() > MULTI_OPS_MAX {
            return Err(ApiError::new(ErrorCode::InvalidArgument)
                .with_detail(format!("multi of {} operations, limit {MULTI_OPS_MAX}", ops.len())));
        }
        let mut results = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            let result = match op {
                MultiOp::Create(request) => {
                    self.create(request).map(|(path, stat)| OpResult::Created { path, stat })
                }
                MultiOp::Set(request) => self.set(request).map(|stat| OpResult::Set { stat }),
                MultiOp::Delete(request) => self.delete(request).map(|()| OpResult::Deleted {}),
                MultiOp::Check { path, version } => {
                    self.check(path, *version).map(|()| OpResult::Checked {})
                }
            };
            match result {
                Ok(result) => results.push(MultiResult::Ok(result)),
                Err(error) => {
                    let mut results: Vec<MultiResult> = (0..ops.len())
                        .map(|_| MultiResult::Error(ApiError::new(ErrorCode::RolledBack)))
                        .collect();
                    results[index] = MultiResult::Error(error);
                    return Ok(Reply::Multi { results });
                }
            }
        }
        Ok(Reply::Multi { results })
    }
}
