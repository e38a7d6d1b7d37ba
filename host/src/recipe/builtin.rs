//! The built-in recipes, built from `recipes/` by `host/build.rs` and embedded in the binary.
//! They are ordinary recipes: deployed through the log when a cluster is created, with no
//! powers a user's recipe lacks.

/// (name, component) of every built-in recipe.
pub const BUILTIN_RECIPES: &[(&str, &[u8])] = &[
    ("barrier", include_bytes!(concat!(env!("OUT_DIR"), "/cairn_recipe_barrier.wasm"))),
    ("counter", include_bytes!(concat!(env!("OUT_DIR"), "/cairn_recipe_counter.wasm"))),
    ("election", include_bytes!(concat!(env!("OUT_DIR"), "/cairn_recipe_election.wasm"))),
    ("fair-lock", include_bytes!(concat!(env!("OUT_DIR"), "/cairn_recipe_fair_lock.wasm"))),
    ("queue", include_bytes!(concat!(env!("OUT_DIR"), "/cairn_recipe_queue.wasm"))),
    ("rw-lock", include_bytes!(concat!(env!("OUT_DIR"), "/cairn_recipe_rw_lock.wasm"))),
    ("semaphore", include_bytes!(concat!(env!("OUT_DIR"), "/cairn_recipe_semaphore.wasm"))),
];
