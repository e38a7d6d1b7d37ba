//! `cairn recipe` (deploy, list, retire, invoke) and `cairn counter`.

use super::*;

#[derive(Debug, Args)]
pub struct RecipeArgs {
    #[command(subcommand)]
    pub command: RecipeCommand,
}

#[derive(Debug, Subcommand)]
pub enum RecipeCommand {
    /// Deploy a component (FILE.wasm, a `cairn:recipe` world) under a name.
    Deploy {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// The version number; the next one when absent.
        #[arg(long)]
        version: Option<u32>,
        /// For a new name (administrators only): the principal it belongs to, who may then
        /// deploy its next versions. The deployer when absent.
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the deployed recipes.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Retire one version: NAME@VERSION.
    Retire {
        recipe: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run one operation: NAME or NAME@VERSION, the op, and its arguments (the recipe's own
    /// encoding, JSON for the built-ins).
    Invoke {
        recipe: String,
        op: String,
        #[arg(default_value = "")]
        args: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl RecipeCommand {
    pub(super) fn client(&self) -> &ClientArgs {
        match self {
            RecipeCommand::Deploy { client, .. }
            | RecipeCommand::Ls { client }
            | RecipeCommand::Retire { client, .. }
            | RecipeCommand::Invoke { client, .. } => client,
        }
    }
}

#[derive(Debug, Args)]
pub struct CounterArgs {
    #[command(subcommand)]
    pub command: CounterCommand,
}

#[derive(Debug, Subcommand)]
pub enum CounterCommand {
    /// Add N (default 1, may be negative) and print the new value.
    Add {
        name: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        n: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the value.
    Get {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Splits `NAME@VERSION` (the version optional unless `required`).
pub(super) fn recipe_spec(spec: &str, required: bool) -> anyhow::Result<(&str, Option<u32>)> {
    match spec.split_once('@') {
        Some((name, version)) => {
            let version = version.parse().with_context(|| format!("bad version in {spec:?}"))?;
            Ok((name, Some(version)))
        }
        None if required => anyhow::bail!("name the version: {spec}@VERSION"),
        None => Ok((spec, None)),
    }
}

pub(super) async fn run_recipe_command(
    client: &Client,
    args: RecipeArgs,
) -> anyhow::Result<ExitCode> {
    let json_out = args.command.client().json;
    match args.command {
        RecipeCommand::Deploy { file, name, version, owner, .. } => {
            let component =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let (version, hash) = match (owner, version) {
                (Some(owner), None) => client.deploy_recipe_for(&name, &owner, component).await?,
                (Some(_), Some(_)) => anyhow::bail!("--owner is for a new name's first version"),
                (None, version) => client.deploy_recipe(&name, version, component).await?,
            };
            if json_out {
                print_json(&json!({ "name": name, "version": version, "hash": hash }))?;
            } else {
                out!("{name}@{version} sha256:{hash}");
            }
        }
        RecipeCommand::Ls { .. } => {
            let recipes = client.recipes().await?;
            if json_out {
                print_json(&json!({ "recipes": recipes.iter().map(|r| json!({
                    "name": r.name, "version": r.version, "hash": r.hash, "bytes": r.bytes,
                })).collect::<Vec<_>>() }))?;
            } else {
                out!("{:<24} {:>8} {:>10}  SHA256", "NAME", "VERSION", "BYTES");
                for r in &recipes {
                    out!(
                        "{:<24} {:>8} {:>10}  {}",
                        r.name,
                        r.version,
                        r.bytes,
                        &r.hash[..16.min(r.hash.len())]
                    );
                }
            }
        }
        RecipeCommand::Retire { recipe, .. } => {
            let (name, version) = recipe_spec(&recipe, true)?;
            client.retire_recipe(name, version.unwrap_or_default()).await?;
        }
        RecipeCommand::Invoke { recipe, op, args, .. } => {
            let (name, version) = recipe_spec(&recipe, false)?;
            let result = client.invoke(name, version, &op, args.into_bytes()).await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&result)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn run_counter_command(
    client: &Client,
    args: CounterArgs,
) -> anyhow::Result<ExitCode> {
    let (op, request, client_args) = match &args.command {
        CounterCommand::Add { name, n, client } => {
            ("add", json!({ "name": name, "delta": n }), client)
        }
        CounterCommand::Get { name, client } => ("get", json!({ "name": name }), client),
    };
    let result = client.invoke("counter", None, op, request.to_string().into_bytes()).await?;
    let reply: serde_json::Value = serde_json::from_slice(&result)
        .context("the counter recipe answered something else than JSON")?;
    if client_args.json {
        print_json(&reply)?;
    } else {
        out!("{}", reply["value"]);
    }
    Ok(ExitCode::SUCCESS)
}
