//! A recipe that reaches for the network: its component imports WASI's sockets, which a node
//! refuses at deploy. The runtime's tests use it to check that refusal.

use cairn_recipe::{Host, Recipe};

#[derive(Debug)]
pub struct SocketUser;

impl Recipe for SocketUser {
    fn invoke(_host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        match op {
            "connect" => {
                let address = String::from_utf8_lossy(args).into_owned();
                std::net::TcpStream::connect(address.as_str())
                    .map(|_| b"connected".to_vec())
                    .map_err(|e| e.to_string())
            }
            other => Err(format!("unknown op {other}")),
        }
    }
}

cairn_recipe::export!(SocketUser);
