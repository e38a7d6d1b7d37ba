//! `cairn queue`: putting items on a work queue and taking them off.

use super::*;

#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Add an item and print its id.
    Put {
        name: String,
        data: String,
        /// Lower priorities are taken first.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take the next item (waiting for one), print its data and ack it.
    Take {
        name: String,
        /// Give up when no item comes within this long: 500ms, 10s, 2m.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print how many items are ready and taken, and how many consumers wait.
    Status {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(super) async fn run_queue_command(
    client: &Client,
    args: QueueArgs,
) -> anyhow::Result<ExitCode> {
    match args.command {
        QueueCommand::Put { name, data, priority, client: client_args } => {
            let id = client.queue(&name).put_with_priority(&data, priority).await?;
            if client_args.json {
                print_json(&json!({ "id": id }))?;
            } else {
                out!("{id}");
            }
        }
        QueueCommand::Take { name, timeout, client: client_args } => {
            let queue = client.queue(&name);
            let item = within(timeout, &format!("an item of {name}"), queue.take()).await?;
            if client_args.json {
                print_json(&json!({ "id": item.id(), "data": item.data() }))?;
            } else {
                out!("{}", item.data());
            }
            std::io::stdout().flush()?;
            item.ack().await?;
        }
        QueueCommand::Status { name, client: client_args } => {
            let status = client.queue(&name).status().await?;
            if client_args.json {
                print_json(
                    &json!({ "ready": status.ready, "taken": status.taken, "waiting": status.waiting }),
                )?;
            } else {
                out!("ready {} taken {} waiting {}", status.ready, status.taken, status.waiting);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
