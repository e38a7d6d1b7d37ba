//! ZooKeeper's four-letter words on the ZooKeeper port: `ruok`, `isro`, `srvr`, `stat`, `mntr`
//! and `envi`, answered in ZooKeeper 3.8's text (health checks and kazoo parse it), then the
//! connection closes. Pure: the connection gathers the [`Facts`], this formats them.

use std::fmt::Write;

/// The version this front end reports: ZooKeeper's protocol version it follows, then Cairn's.
/// Clients choose features by its leading number (kazoo reads it from `envi`).
pub fn version() -> String {
    format!("3.8.4-cairn-{}", env!("CARGO_PKG_VERSION"))
}

/// Whether the first four bytes of a connection are a four-letter word rather than a frame's
/// length.
pub fn is_word(bytes: &[u8; 4]) -> bool {
    matches!(bytes, b"ruok" | b"isro" | b"srvr" | b"stat" | b"mntr" | b"envi")
}

/// One ZooKeeper connection, as `stat` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub remote: String,
    pub session: Option<u64>,
    pub received: u64,
    pub sent: u64,
}

/// What the words report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// `leader`, `follower` or `standalone`.
    pub mode: &'static str,
    pub zxid: u64,
    pub znodes: usize,
    pub data_bytes: u64,
    pub ephemerals: usize,
    pub watches: u64,
    pub received: u64,
    pub sent: u64,
    /// Requests being served now.
    pub outstanding: u64,
    /// Request latency in milliseconds: least, mean, most.
    pub latency_ms: (u64, f64, u64),
    pub clients: Vec<Client>,
    pub uptime_ms: u64,
    pub host_name: String,
    pub working_dir: String,
}

/// The answer to `word`.
pub fn answer(word: &[u8; 4], facts: &Facts) -> String {
    match word {
        b"ruok" => "imok".to_string(),
        b"isro" => "rw".to_string(),
        b"srvr" => server(facts, false),
        b"stat" => server(facts, true),
        b"mntr" => monitor(facts),
        _ => environment(facts),
    }
}

fn server(facts: &Facts, with_clients: bool) -> String {
    let mut text = format!("Zookeeper version: {}\n", version());
    if with_clients {
        text.push_str("Clients:\n");
        for client in &facts.clients {
            let _ = write!(
                text,
                " /{}[1](queued=0,recved={},sent={}",
                client.remote, client.received, client.sent
            );
            if let Some(session) = client.session {
                let _ = write!(text, ",sid={session:#x}");
            }
            text.push_str(")\n");
        }
        text.push('\n');
    }
    let (min, avg, max) = facts.latency_ms;
    let _ = write!(
        text,
        "Latency min/avg/max: {min}/{avg:.4}/{max}\nReceived: {}\nSent: {}\nConnections: {}\n\
         Outstanding: {}\nZxid: {:#x}\nMode: {}\nNode count: {}\n",
        facts.received,
        facts.sent,
        facts.clients.len(),
        facts.outstanding,
        facts.zxid,
        facts.mode,
        facts.znodes
    );
    text
}

fn monitor(facts: &Facts) -> String {
    let (min, avg, max) = facts.latency_ms;
    let lines: [(&str, String); 14] = [
        ("zk_version", version()),
        ("zk_server_state", facts.mode.to_string()),
        ("zk_avg_latency", format!("{avg:.4}")),
        ("zk_max_latency", max.to_string()),
        ("zk_min_latency", min.to_string()),
        ("zk_packets_received", facts.received.to_string()),
        ("zk_packets_sent", facts.sent.to_string()),
        ("zk_num_alive_connections", facts.clients.len().to_string()),
        ("zk_outstanding_requests", facts.outstanding.to_string()),
        ("zk_znode_count", facts.znodes.to_string()),
        ("zk_watch_count", facts.watches.to_string()),
        ("zk_ephemerals_count", facts.ephemerals.to_string()),
        ("zk_approximate_data_size", facts.data_bytes.to_string()),
        ("zk_uptime", facts.uptime_ms.to_string()),
    ];
    lines.iter().map(|(key, value)| format!("{key}\t{value}\n")).collect()
}

fn environment(facts: &Facts) -> String {
    let lines = [
        ("zookeeper.version", version()),
        ("host.name", facts.host_name.clone()),
        ("os.name", std::env::consts::OS.to_string()),
        ("os.arch", std::env::consts::ARCH.to_string()),
        ("user.dir", facts.working_dir.clone()),
        ("cairn.version", env!("CARGO_PKG_VERSION").to_string()),
    ];
    let mut text = "Environment:\n".to_string();
    for (key, value) in lines {
        let _ = writeln!(text, "{key}={value}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_answer_as_zookeeper_3_8_does() {
        let facts = Facts {
            mode: "standalone",
            zxid: 0x1f,
            znodes: 5,
            clients: vec![Client {
                remote: "127.0.0.1:5000".into(),
                session: Some(2),
                received: 3,
                sent: 2,
            }],
            ..Facts::default()
        };
        assert_eq!(answer(b"ruok", &facts), "imok");
        assert_eq!(answer(b"isro", &facts), "rw");
        let srvr = answer(b"srvr", &facts);
        assert!(srvr.starts_with("Zookeeper version: 3.8.4-cairn-"), "{srvr}");
        assert!(srvr.contains("\nZxid: 0x1f\nMode: standalone\nNode count: 5\n"), "{srvr}");
        let stat = answer(b"stat", &facts);
        assert!(
            stat.contains("Clients:\n /127.0.0.1:5000[1](queued=0,recved=3,sent=2,sid=0x2)\n\n")
        );
        let mntr = answer(b"mntr", &facts);
        assert!(mntr.contains("zk_server_state\tstandalone\n"), "{mntr}");
        assert!(mntr.contains("zk_znode_count\t5\n"), "{mntr}");
        // kazoo takes the leading [\d.]* of zookeeper.version.
        let envi = answer(b"envi", &facts);
        assert!(envi.starts_with("Environment:\nzookeeper.version=3.8.4-cairn-"), "{envi}");
        assert!(is_word(b"ruok") && !is_word(&[0, 0, 0, 44]));
    }
}
