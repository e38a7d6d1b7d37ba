//! A work queue: items put with a priority, taken one consumer at a time, gone only when acked.
//! An item taken but not acked returns to the queue when its consumer's session ends, so nothing
//! is lost to a crashed consumer.
//!
//! State, for queue `Q`:
//! - `/<Q>/items/p<priority>-<seq>`: the item's data, persistent. The name orders items: lower
//!   priority values first (as Curator's priority queue), then arrival.
//! - `/<Q>/tickets/t-<seq>`: a consumer's claim, an ephemeral znode of the taking session holding
//!   `{"session": S}`, in arrival order. A ticket waits for an item or holds one.
//! - `/<Q>/taken/<item>` names the ticket holding an item and `/<Q>/assigned/<ticket>` the item a
//!   ticket holds (persistent, so the hook still finds the item when the ticket is gone).
//!
//! When a consumer's session ends its tickets go in that log entry; the hook returns their items
//! and hands them to the next waiting tickets.
//!
//! Ops, answers, notifications and records are `cairn_builtins::queue`'s types (see
//! `sdk/wire/RECIPES.md` for the protocol in words).

use cairn_builtins::queue::{
    Ack, AckReply, Cancel, CancelReply, Handed, NAME_LEN_MAX, Poll, Put, PutReply, Release,
    ReleaseReply, Status, StatusReply, Take, TakeReply, Ticket,
};
use cairn_builtins::{Op, encode, serve};
use cairn_recipe::{Host, Mode, Recipe, StoreError, records};

#[derive(Debug)]
pub struct Queue;

fn error(e: StoreError) -> String {
    e.to_string()
}

/// The znodes of one queue.
struct Paths {
    name: String,
    root: String,
}

impl Paths {
    fn new(name: &str) -> Result<Paths, String> {
        Ok(Paths { name: name.to_string(), root: records::entity_path("queue", name)? })
    }

    fn dir(&self, dir: &str) -> String {
        format!("{}/{dir}", self.root)
    }

    fn item(&self, id: &str) -> String {
        format!("{}/items/{id}", self.root)
    }

    fn ticket(&self, ticket: &str) -> String {
        format!("{}/tickets/{ticket}", self.root)
    }

    fn taken(&self, id: &str) -> String {
        format!("{}/taken/{id}", self.root)
    }

    fn assigned(&self, ticket: &str) -> String {
        format!("{}/assigned/{ticket}", self.root)
    }

    fn ensure(&self, host: &mut dyn Host) -> Result<(), String> {
        records::ensure(host, &self.root)?;
        for dir in ["items", "tickets", "taken", "assigned"] {
            records::ensure(host, &self.dir(dir))?;
        }
        Ok(())
    }
}

/// A child's name must be one this recipe made: no reaching elsewhere through an id.
fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= NAME_LEN_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok { Ok(()) } else { Err(format!("invalid {kind} {name:?}")) }
}

fn sorted_children(host: &mut dyn Host, path: &str) -> Result<Vec<String>, String> {
    let mut names = match host.children(path) {
        Ok(names) => names,
        Err(StoreError::NoNode) => Vec::new(),
        Err(error) => return Err(error.to_string()),
    };
    names.sort();
    Ok(names)
}

fn read_string(host: &mut dyn Host, path: &str) -> Result<Option<String>, String> {
    Ok(host.read(path).map_err(error)?.map(|data| String::from_utf8_lossy(&data).into_owned()))
}

fn ticket_session(host: &mut dyn Host, q: &Paths, ticket: &str) -> Result<Option<u64>, String> {
    let record: Option<Ticket> = records::read(host, &q.ticket(ticket))?;
    Ok(record.map(|record| record.session))
}

fn item_data(host: &mut dyn Host, q: &Paths, id: &str) -> Result<String, String> {
    read_string(host, &q.item(id))?.ok_or_else(|| format!("lost item {id}"))
}

/// Hands free items to waiting tickets, both in order; notifies each ticket's session except
/// `quiet` (the caller, who learns from its reply).
fn dispatch(host: &mut dyn Host, q: &Paths, quiet: u64) -> Result<(), String> {
    let taken = sorted_children(host, &q.dir("taken"))?;
    let free: Vec<String> = sorted_children(host, &q.dir("items"))?
        .into_iter()
        .filter(|id| taken.binary_search(id).is_err())
        .collect();
    if free.is_empty() {
        return Ok(());
    }
    let assigned = sorted_children(host, &q.dir("assigned"))?;
    let waiting = sorted_children(host, &q.dir("tickets"))?
        .into_iter()
        .filter(|t| assigned.binary_search(t).is_err());
    for (id, ticket) in free.into_iter().zip(waiting) {
        host.create(&q.taken(&id), ticket.as_bytes(), Mode::Persistent, false).map_err(error)?;
        host.create(&q.assigned(&ticket), id.as_bytes(), Mode::Persistent, false).map_err(error)?;
        let Some(session) = ticket_session(host, q, &ticket)? else { continue };
        if session != quiet {
            let data = item_data(host, q, &id)?;
            host.notify(session, &encode(&Handed { queue: q.name.clone(), ticket, id, data }));
        }
    }
    Ok(())
}

/// Takes an item back from the ticket holding it; the ticket is gone or going.
fn unassign(host: &mut dyn Host, q: &Paths, ticket: &str) -> Result<(), String> {
    if let Some(id) = read_string(host, &q.assigned(ticket))? {
        host.delete(&q.assigned(ticket), None).map_err(error)?;
        match host.delete(&q.taken(&id), None) {
            Ok(()) | Err(StoreError::NoNode) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The ticket of the caller's that holds item `id`.
fn holding_ticket(host: &mut dyn Host, q: &Paths, id: &str) -> Result<String, String> {
    check_name("item id", id)?;
    let ticket = read_string(host, &q.taken(id))?
        .ok_or_else(|| format!("item {id} of {} is not taken", q.name))?;
    if ticket_session(host, q, &ticket)? != Some(host.session()) {
        return Err(format!("item {id} of {} is not this session's", q.name));
    }
    Ok(ticket)
}

/// Ends the caller's hold on item `id` (its ticket goes); returns the id. The item stays, free.
fn give_back_ticket(host: &mut dyn Host, q: &Paths, id: Option<String>) -> Result<String, String> {
    let id = id.ok_or("say which item")?;
    let ticket = holding_ticket(host, q, &id)?;
    unassign(host, q, &ticket)?;
    host.delete(&q.ticket(&ticket), None).map_err(error)?;
    Ok(id)
}

/// The caller's own ticket `ticket`.
fn own_ticket(host: &mut dyn Host, q: &Paths, ticket: Option<String>) -> Result<String, String> {
    let ticket = ticket.ok_or("say which ticket")?;
    check_name("ticket", &ticket)?;
    match ticket_session(host, q, &ticket)? {
        Some(session) if session == host.session() => Ok(ticket),
        Some(_) => Err(format!("ticket {ticket} of {} is not this session's", q.name)),
        None => Err(format!("no ticket {ticket} in {}", q.name)),
    }
}

/// The item `ticket` holds, or that it waits.
fn ticket_state(host: &mut dyn Host, q: &Paths, ticket: &str) -> Result<TakeReply, String> {
    match read_string(host, &q.assigned(ticket))? {
        Some(id) => {
            let data = item_data(host, q, &id)?;
            Ok(TakeReply::item(ticket.to_string(), id, data))
        }
        None => Ok(TakeReply::waiting(ticket.to_string())),
    }
}

/// `put`: a new item, handed to the first waiting ticket if any.
fn put(host: &mut dyn Host, args: Put) -> Result<PutReply, String> {
    let q = Paths::new(&args.queue)?;
    let data = args.data.ok_or("put needs data")?;
    q.ensure(host)?;
    let rank = i64::from(args.priority) - i64::from(i32::MIN);
    let path = host
        .create(&q.item(&format!("p{rank:010}-")), data.as_bytes(), Mode::Persistent, true)
        .map_err(error)?;
    dispatch(host, &q, 0)?;
    let id = path.rsplit('/').next().unwrap_or_default();
    Ok(PutReply { id: id.to_string() })
}

/// `take`: a new ticket of the caller's, holding an item or waiting; none for an empty queue
/// without `wait`.
fn take(host: &mut dyn Host, args: Take) -> Result<TakeReply, String> {
    let q = Paths::new(&args.queue)?;
    let session = host.caller_session(Take::NAME)?;
    q.ensure(host)?;
    if !args.wait {
        let taken = sorted_children(host, &q.dir("taken"))?.len();
        let items = sorted_children(host, &q.dir("items"))?.len();
        if items == taken {
            return Ok(TakeReply::empty());
        }
    }
    let path = records::create(host, &q.ticket("t-"), &Ticket { session }, Mode::Ephemeral, true)?;
    let ticket = path.rsplit('/').next().unwrap_or_default().to_string();
    dispatch(host, &q, session)?;
    ticket_state(host, &q, &ticket)
}

/// `poll`: the state of one of the caller's tickets.
fn poll(host: &mut dyn Host, args: Poll) -> Result<TakeReply, String> {
    let q = Paths::new(&args.queue)?;
    let ticket = own_ticket(host, &q, args.ticket)?;
    ticket_state(host, &q, &ticket)
}

/// `cancel`: one of the caller's tickets goes; an item it held is handed on.
fn cancel(host: &mut dyn Host, args: Cancel) -> Result<CancelReply, String> {
    let q = Paths::new(&args.queue)?;
    let ticket = own_ticket(host, &q, args.ticket)?;
    unassign(host, &q, &ticket)?;
    host.delete(&q.ticket(&ticket), None).map_err(error)?;
    dispatch(host, &q, 0)?;
    Ok(CancelReply { cancelled: true })
}

/// `ack`: the item and its ticket go.
fn ack(host: &mut dyn Host, args: Ack) -> Result<AckReply, String> {
    let q = Paths::new(&args.queue)?;
    let id = give_back_ticket(host, &q, args.id)?;
    host.delete(&q.item(&id), None).map_err(error)?;
    Ok(AckReply { acked: true })
}

/// `release`: the ticket goes; the item is handed on.
fn release(host: &mut dyn Host, args: Release) -> Result<ReleaseReply, String> {
    let q = Paths::new(&args.queue)?;
    give_back_ticket(host, &q, args.id)?;
    dispatch(host, &q, 0)?;
    Ok(ReleaseReply { released: true })
}

/// `status`: ready and taken items, waiting tickets.
fn status(host: &mut dyn Host, args: Status) -> Result<StatusReply, String> {
    let q = Paths::new(&args.queue)?;
    let items = sorted_children(host, &q.dir("items"))?.len();
    let taken = sorted_children(host, &q.dir("taken"))?.len();
    let tickets = sorted_children(host, &q.dir("tickets"))?.len();
    let assigned = sorted_children(host, &q.dir("assigned"))?.len();
    Ok(StatusReply {
        ready: (items - taken) as u64,
        taken: taken as u64,
        waiting: (tickets - assigned) as u64,
    })
}

impl Recipe for Queue {
    fn invoke(host: &mut dyn Host, op: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        match op {
            Put::NAME => serve(args, |args| put(host, args)),
            Take::NAME => serve(args, |args| take(host, args)),
            Poll::NAME => serve(args, |args| poll(host, args)),
            Ack::NAME => serve(args, |args| ack(host, args)),
            Release::NAME => serve(args, |args| release(host, args)),
            Cancel::NAME => serve(args, |args| cancel(host, args)),
            Status::NAME => serve(args, |args| status(host, args)),
            other => Err(format!(
                "unknown op {other:?}; queue knows put, take, poll, ack, release, cancel, status"
            )),
        }
    }

    fn on_session_ended(host: &mut dyn Host, _session: u64, deleted: Vec<String>) {
        // Deleted tickets are `/<Q>/tickets/<ticket>`: return their items, then hand them on.
        let mut queues = Vec::new();
        for path in &deleted {
            let mut parts = path.trim_start_matches('/').split('/');
            let (Some(name), Some("tickets"), Some(ticket)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(q) = Paths::new(name) else { continue };
            let _ = unassign(host, &q, ticket);
            if !queues.contains(&q.name) {
                queues.push(q.name.clone());
            }
        }
        for name in queues {
            if let Ok(q) = Paths::new(&name) {
                let _ = dispatch(host, &q, 0);
            }
        }
    }
}

cairn_recipe::export!(Queue);

#[cfg(test)]
mod tests {
    use cairn_recipe::testing::MemoryHost;
    use serde_json::{Value, json};

    use super::*;

    fn call(host: &mut MemoryHost, session: u64, op: &str, args: Value) -> Value {
        let reply = host.invoke::<Queue>(session, op, args.to_string().as_bytes()).expect(op);
        serde_json::from_slice(&reply).expect("json")
    }

    fn put(host: &mut MemoryHost, data: &str, priority: i32) -> String {
        let reply = call(host, 1, "put", json!({"queue": "q", "data": data, "priority": priority}));
        reply["id"].as_str().expect("as the test set up").to_string()
    }

    fn take(host: &mut MemoryHost, session: u64) -> Value {
        call(host, session, "take", json!({"queue": "q"}))
    }

    #[test]
    fn priority_then_arrival_order() {
        let mut host = MemoryHost::default();
        put(&mut host, "b", 0);
        put(&mut host, "c", 0);
        put(&mut host, "a", -5);
        put(&mut host, "z", 7);
        let taken: Vec<Value> = (0..4).map(|_| take(&mut host, 2)["data"].clone()).collect();
        assert_eq!(taken, [json!("a"), json!("b"), json!("c"), json!("z")]);
        assert_eq!(
            call(&mut host, 3, "take", json!({"queue": "q", "wait": false})),
            json!({"empty": true})
        );
        assert_eq!(
            call(&mut host, 3, "status", json!({"queue": "q"})),
            json!({"ready": 0, "taken": 4, "waiting": 0})
        );
    }

    #[test]
    fn a_waiting_consumer_is_handed_the_next_item() {
        let mut host = MemoryHost::default();
        let waiting = take(&mut host, 2);
        assert_eq!(waiting["waiting"], true);
        let ticket = waiting["ticket"].as_str().expect("as the test set up").to_string();
        let id = put(&mut host, "job", 0);
        let (to, note) = host.notifications.last().cloned().expect("as the test set up");
        assert_eq!(to, 2);
        let note: Value = serde_json::from_slice(&note).expect("as the test set up");
        assert_eq!(note, json!({"queue": "q", "ticket": ticket, "id": id, "data": "job"}));
        assert_eq!(
            call(&mut host, 2, "poll", json!({"queue": "q", "ticket": ticket}))["data"],
            "job"
        );
        assert!(
            host.invoke::<Queue>(3, "ack", json!({"queue": "q", "id": id}).to_string().as_bytes())
                .is_err(),
            "not 3's"
        );
        assert_eq!(
            call(&mut host, 2, "ack", json!({"queue": "q", "id": id})),
            json!({"acked": true})
        );
        assert_eq!(
            call(&mut host, 3, "status", json!({"queue": "q"})),
            json!({"ready": 0, "taken": 0, "waiting": 0})
        );
    }

    #[test]
    fn unacked_items_return_when_the_consumer_goes() {
        let mut host = MemoryHost::default();
        put(&mut host, "one", 0);
        put(&mut host, "two", 0);
        assert_eq!(take(&mut host, 2)["data"], "one");
        let two = take(&mut host, 3);
        assert_eq!(two["data"], "two");
        let waiting = take(&mut host, 4);
        assert_eq!(waiting["waiting"], true);
        host.end_session::<Queue>(2);
        // "one" went straight to the waiting consumer.
        let (to, note) = host.notifications.last().cloned().expect("as the test set up");
        assert_eq!(to, 4);
        assert_eq!(
            serde_json::from_slice::<Value>(&note).expect("as the test set up")["data"],
            "one"
        );
        assert_eq!(
            call(&mut host, 9, "status", json!({"queue": "q"})),
            json!({"ready": 0, "taken": 2, "waiting": 0})
        );
        // Released and cancelled items go back too, in their order.
        assert_eq!(
            call(&mut host, 3, "release", json!({"queue": "q", "id": two["id"]})),
            json!({"released": true})
        );
        let ticket = waiting["ticket"].clone();
        assert_eq!(
            call(&mut host, 4, "cancel", json!({"queue": "q", "ticket": ticket})),
            json!({"cancelled": true})
        );
        assert_eq!(
            call(&mut host, 9, "status", json!({"queue": "q"})),
            json!({"ready": 2, "taken": 0, "waiting": 0})
        );
        assert_eq!(take(&mut host, 5)["data"], "one");
        assert_eq!(take(&mut host, 5)["data"], "two");
    }

    #[test]
    fn hostile_ids_and_missing_args_are_refused() {
        let mut host = MemoryHost::default();
        put(&mut host, "x", 0);
        take(&mut host, 2);
        for bad in [
            json!({"queue": "q", "id": "../../etc"}),
            json!({"queue": "q"}),
            json!({"queue": "q/../r", "id": "p1"}),
        ] {
            assert!(host.invoke::<Queue>(2, "ack", bad.to_string().as_bytes()).is_err(), "{bad}");
        }
        assert!(host.invoke::<Queue>(2, "put", br#"{"queue":"q"}"#).is_err(), "no data");
        assert!(host.invoke::<Queue>(2, "shuffle", br#"{"queue":"q"}"#).is_err());
    }
}
