//! The component glue: the world's bindings and the [`Host`] over its imports.

use crate::{Host, Mode, Stat, StoreError};

#[allow(missing_debug_implementations, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "recipe",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "cairn_recipe::wasm::bindings",
    });
}

use bindings::cairn::recipe::{context, notify, store};

/// The host as the component's imports reach it.
#[derive(Debug)]
pub struct WasmHost;

fn stat(stat: store::Stat) -> Stat {
    Stat {
        version: stat.version,
        cversion: stat.cversion,
        czxid: stat.czxid,
        mzxid: stat.mzxid,
        ephemeral_owner: stat.ephemeral_owner,
        num_children: stat.num_children,
    }
}

fn error(error: store::Error) -> StoreError {
    match error {
        store::Error::NoNode => StoreError::NoNode,
        store::Error::NodeExists => StoreError::NodeExists,
        store::Error::BadVersion => StoreError::BadVersion,
        store::Error::NotEmpty => StoreError::NotEmpty,
        store::Error::InvalidPath => StoreError::InvalidPath,
        store::Error::TooLarge => StoreError::TooLarge,
        store::Error::NoSession => StoreError::NoSession,
        store::Error::NoChildrenForEphemerals => StoreError::NoChildrenForEphemerals,
    }
}

impl Host for WasmHost {
    fn get(&mut self, path: &str) -> Result<(Vec<u8>, Stat), StoreError> {
        store::get(path).map(|(data, s)| (data, stat(s))).map_err(error)
    }

    fn children(&mut self, path: &str) -> Result<Vec<String>, StoreError> {
        store::children(path).map_err(error)
    }

    fn children_with_prefix(
        &mut self,
        path: &str,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        store::children_with_prefix(path, prefix, limit).map_err(error)
    }

    fn first_sequential(&mut self, path: &str) -> Result<Option<String>, StoreError> {
        store::first_sequential(path).map_err(error)
    }

    fn create(
        &mut self,
        path: &str,
        data: &[u8],
        mode: Mode,
        sequential: bool,
    ) -> Result<String, StoreError> {
        let mode = match mode {
            Mode::Persistent => store::Mode::Persistent,
            Mode::Ephemeral => store::Mode::Ephemeral,
        };
        store::create(path, data, mode, sequential).map_err(error)
    }

    fn set(&mut self, path: &str, data: &[u8], version: Option<u32>) -> Result<Stat, StoreError> {
        store::set(path, data, version).map(stat).map_err(error)
    }

    fn delete(&mut self, path: &str, version: Option<u32>) -> Result<(), StoreError> {
        store::delete(path, version).map_err(error)
    }

    fn session(&self) -> u64 {
        context::session()
    }

    fn zxid(&self) -> u64 {
        context::zxid()
    }

    fn time_ms(&self) -> u64 {
        context::time_ms()
    }

    fn session_live(&self, session: u64) -> bool {
        context::session_live(session)
    }

    fn fencing_token(&mut self) -> u64 {
        context::fencing_token()
    }

    fn notify(&mut self, session: u64, message: &[u8]) {
        notify::notify(session, message);
    }
}
