//! Where recipes live in the tree: the reserved root, each recipe's namespace, and which
//! recipe a path belongs to. Read by apply, the transaction, the runtime and the front end.

/// Where every recipe's namespace lives; clients may read below it but not write.
pub const RESERVED_ROOT: &str = "/cairn";
/// The parent of the recipes' namespaces.
pub const RECIPES_ROOT: &str = "/cairn/recipes";

/// The namespace root of recipe `name`.
pub fn namespace(name: &str) -> String {
    format!("{RECIPES_ROOT}/{name}")
}

/// The recipe a path belongs to and the path relative to its namespace, if it is in one.
pub fn recipe_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(RECIPES_ROOT)?.strip_prefix('/')?;
    match rest.split_once('/') {
        Some((name, _)) => Some((name, &rest[name.len()..])),
        None => Some((rest, "/")),
    }
}

/// Whether a path is reserved for recipes.
pub fn is_reserved(path: &str) -> bool {
    path == RESERVED_ROOT || path.starts_with("/cairn/")
}
