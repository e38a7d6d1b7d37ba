//! Builds the built-in recipes for wasm32-wasip2 with the same cargo, so the node can embed
//! and deploy them. A separate target directory keeps the nested build off the outer build's
//! lock.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// The recipe crates to build, by recipe name: the built-ins, `hostile` and `socket-user` for
/// the runtime's tests and the `token-bucket` example (`examples/`), which the tests deploy as a user would.
const RECIPES: &[&str] = &[
    "barrier",
    "counter",
    "election",
    "fair-lock",
    "hostile",
    "queue",
    "rw-lock",
    "semaphore",
    "socket-user",
    "token-bucket",
];

/// The target recipes are built for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// Installs the wasm target with rustup when the toolchain lacks it, as a fresh machine does:
/// `rust-toolchain.toml` names it, but rustup adds a target only when it installs the toolchain.
fn ensure_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let installed = sysroot.is_some_and(|root| root.join("lib/rustlib").join(WASM_TARGET).exists());
    if installed {
        return;
    }
    println!("cargo:warning=installing the {WASM_TARGET} target with rustup, to build the recipes");
    let added = Command::new("rustup").args(["target", "add", WASM_TARGET]).status();
    assert!(
        added.is_ok_and(|status| status.success()),
        "the {WASM_TARGET} target is missing and rustup could not add it: run `rustup target add {WASM_TARGET}`"
    );
}

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("host/ sits in the workspace").to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("recipes");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    for watched in ["recipes", "examples", "sdk/recipe", "sdk/builtins", "wit"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }

    ensure_wasm_target();
    let mut build = Command::new(cargo);
    build
        .current_dir(&workspace)
        .args(["build", "--profile", "recipe", "--locked", "--target", WASM_TARGET, "--target-dir"])
        .arg(&target_dir);
    for recipe in RECIPES {
        build.args(["-p", &format!("cairn-recipe-{recipe}")]);
    }
    // The outer build's settings are for the host, not for the recipes.
    for variable in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        build.env_remove(variable);
    }
    let status = build.status().expect("cannot run cargo to build the built-in recipes");
    assert!(
        status.success(),
        "building the built-in recipes for wasm32-wasip2 failed; is the target installed? \
         (rustup target add wasm32-wasip2)"
    );
    // The `recipe` profile's output; the integration tests deploy components from there.
    let built_dir = target_dir.join(WASM_TARGET).join("recipe");
    println!("cargo:rustc-env=CAIRN_RECIPES_DIR={}", built_dir.display());
    for recipe in RECIPES {
        let file = format!("cairn_recipe_{}.wasm", recipe.replace('-', "_"));
        let built = built_dir.join(&file);
        std::fs::copy(&built, out_dir.join(&file))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
    }
}
