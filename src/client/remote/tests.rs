//! Remote clients talking to a `HubServer` over an in-memory text loop.

use super::*;
use crate::hub::{Hub, HubConfig};
use crate::ids::EndpointId;
use crate::server::{HubServer, ServerOutput};
use crate::time::{Now, Timestamp, DEFAULT_EPOCH};

struct Net {
    server: HubServer,
    clients: Vec<(EndpointId, RemoteLink)>,
    /// Events each client received and the test has not taken yet.
    inbox: Vec<Vec<ClientEvent>>,
    now: Instant,
}

impl Net {
    fn new() -> Net {
        let config = HubConfig {
            ttl_sweep_interval_micros: 0,
            expectation_sweep_interval_micros: 0,
            ..HubConfig::default()
        };
        Net {
            server: HubServer::new(Hub::new(config, Instant(0))),
            clients: Vec::new(),
            inbox: Vec::new(),
            now: Instant(0),
        }
    }

    fn wall(&self) -> Now {
        Now {
            wall: Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch"),
            mono: self.now,
        }
    }

    /// A new connection; its link mints request ids from its own range.
    fn connect(&mut self) -> usize {
        let endpoint = self.server.connect();
        let ids = IdGen::starting_after(((self.clients.len() as u128) + 1) << 64);
        self.clients
            .push((endpoint, RemoteLink::new(ids, RPC_TIMEOUT_MICROS)));
        self.inbox.push(Vec::new());
        self.clients.len() - 1
    }

    /// Moves messages both ways until nothing is in flight; returns (and forgets) every event
    /// the clients have received so far.
    fn flush(&mut self) -> Vec<Vec<ClientEvent>> {
        self.pump();
        self.inbox.iter_mut().map(std::mem::take).collect()
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for idx in 0..self.clients.len() {
                while let Some(text) = self.clients[idx].1.poll_send() {
                    let (endpoint, now) = (self.clients[idx].0, self.wall());
                    self.server.receive(now, endpoint, &text);
                    moved = true;
                }
            }
            while let Some(output) = self.server.poll_output() {
                moved = true;
                match output {
                    ServerOutput::Send { endpoint, text } => {
                        if let Some((_, link)) =
                            self.clients.iter_mut().find(|(e, _)| *e == endpoint)
                        {
                            link.receive(&text);
                        }
                    }
                    ServerOutput::Close { endpoint } => {
                        if let Some((_, link)) =
                            self.clients.iter_mut().find(|(e, _)| *e == endpoint)
                        {
                            link.closed();
                        }
                    }
                    ServerOutput::Frame { .. } => unreachable!("this server sends text"),
                }
            }
            if !moved {
                break;
            }
        }
        for (idx, (_, link)) in self.clients.iter_mut().enumerate() {
            self.inbox[idx].extend(std::iter::from_fn(|| link.poll_event()));
        }
    }

    fn call(&mut self, client: usize, op: &str, params: Value) -> Result<Value, HubError> {
        let params = params.as_object().expect("object").clone();
        let now = self.now;
        let id = self.clients[client].1.call(now, op, params);
        self.pump();
        let inbox = &mut self.inbox[client];
        let position = inbox
            .iter()
            .position(|event| matches!(event, ClientEvent::Response { request_id, .. } if *request_id == id))
            .expect("answered");
        match inbox.remove(position) {
            ClientEvent::Response { result, .. } => result.map(Arc::unwrap_or_clone),
            _ => unreachable!("matched a response"),
        }
    }

    fn register(&mut self, client: usize, name: &str) -> AgentId {
        let passport = self
            .call(
                client,
                "register",
                json!({"passport": {"name": name}, "resume": {}}),
            )
            .expect("registers");
        let id = AgentId::parse(passport["agent_id"].as_str().expect("id")).expect("32 hex");
        self.clients[client].1.adopt(id);
        id
    }
}

fn notifies(events: &[ClientEvent]) -> Vec<(AgentId, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            ClientEvent::Notify {
                recipient,
                envelope,
            } => Some((
                *recipient,
                envelope["event_type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_remote_handshake_opens_a_channel_and_receipts_move_the_cursor() {
    let mut net = Net::new();
    let (a, b) = (net.connect(), net.connect());
    let alice = net.register(a, "alice");
    let bob = net.register(b, "bob");
    let params = json!({"creator_id": alice.to_string(), "manifest_type": "consulting", "participants": [bob.to_string()]});
    let open = net.clients[a].1.call(
        net.now,
        "create_channel",
        params.as_object().expect("object").clone(),
    );
    let events = net.flush();
    assert!(events[a].is_empty(), "the open waits for bob's ack");
    let invite = match &events[b][..] {
        [ClientEvent::Notify {
            recipient,
            envelope,
        }] if *recipient == bob => envelope.clone(),
        other => panic!("expected the invite, got {other:?}"),
    };
    let ack = json!({"envelope": {
        "channel_id": invite["channel_id"], "sender_id": bob.to_string(), "audience": null,
        "event_type": "ag2.channel.invite.ack", "event_data": {"channel_id": invite["channel_id"]},
        "causation_id": invite["envelope_id"]
    }});
    net.clients[b].1.receipt(bob, &invite, Ok(()));
    net.call(b, "post_envelope", ack).expect("ack accepted");
    let events = net.flush();
    assert_eq!(
        notifies(&events[a]),
        [(alice, "ag2.channel.opened".to_string())]
    );
    let opened = events[a].iter().any(|event| {
        matches!(event, ClientEvent::Response { request_id, result: Ok(metadata), .. }
            if *request_id == open && metadata["state"] == "active")
    });
    assert!(
        opened,
        "alice's create_channel is answered once bob acked: {events:?}"
    );
    let channel = invite["channel_id"].as_str().expect("id");
    assert_eq!(
        net.server.hub().inbox_cursor(bob, channel),
        invite["envelope_id"].as_str().expect("id")
    );
}

#[test]
fn reconnecting_with_hello_replays_what_was_not_acked() {
    let mut net = Net::new();
    let (a, b) = (net.connect(), net.connect());
    let alice = net.register(a, "alice");
    let bob = net.register(b, "bob");
    let params = json!({"creator_id": alice.to_string(), "manifest_type": "conversation", "participants": [bob.to_string()]});
    net.clients[a].1.call(
        net.now,
        "create_channel",
        params.as_object().expect("object").clone(),
    );
    let events = net.flush();
    let ClientEvent::Notify {
        envelope: invite, ..
    } = &events[b][0]
    else {
        panic!("invite")
    };
    let channel = invite["channel_id"].clone();
    let ack = json!({"envelope": {"channel_id": channel, "sender_id": bob.to_string(), "audience": null,
        "event_type": "ag2.channel.invite.ack", "event_data": {}}});
    net.call(b, "post_envelope", ack).expect("ack");
    // bob's connection drops; alice talks; bob comes back on a new connection.
    let old = net.clients[b].0;
    net.server.disconnect(old);
    net.clients[b].1.closed();
    let text = json!({"envelope": {"channel_id": channel, "sender_id": alice.to_string(), "audience": null,
        "event_type": "ag2.msg.text", "event_data": {"text": "while you were away"}}});
    net.call(a, "post_envelope", text).expect("posted");
    let c = net.connect();
    net.clients[c].1.adopt(bob);
    let now = net.now;
    net.clients[c]
        .1
        .hello(now, "bob", "none", Map::new(), Some(""));
    let events = net.flush();
    assert!(
        matches!(&events[c][0], ClientEvent::Handshake { name, result: Ok(_) } if name == "bob")
    );
    // Nothing was acked: the invite, alice's... every envelope bob may see, sent by others.
    assert_eq!(
        notifies(&events[c][1..]),
        [
            (bob, "ag2.channel.invite".to_string()),
            (bob, "ag2.channel.opened".to_string()),
            (bob, "ag2.msg.text".to_string())
        ]
    );
}

#[test]
fn calls_time_out_and_a_dropped_connection_fails_what_is_in_flight() {
    let mut link = RemoteLink::new(IdGen::default(), 1_000);
    let first = link.call(Instant(0), "get_agent", Map::new());
    link.hello(Instant(0), "bob", "none", Map::new(), None);
    assert_eq!(link.poll_timeout(), Some(Instant(1_000)));
    link.handle_timeout(Instant(999));
    assert!(link.poll_event().is_none());
    link.handle_timeout(Instant(1_000));
    let timed_out: Vec<_> = std::iter::from_fn(|| link.poll_event()).collect();
    assert!(
        matches!(&timed_out[0], ClientEvent::Response { request_id, result: Err(e), .. }
        if *request_id == first && e.type_name == "TimeoutError")
    );
    assert!(
        matches!(&timed_out[1], ClientEvent::Handshake { result: Err(e), .. } if e.type_name == "TimeoutError")
    );
    let late =
        format!(r#"{{"request_id": "{first}", "ok": true, "result": 1, "kind": "response"}}"#);
    link.receive(&late);
    assert!(link.poll_event().is_none(), "a late answer finds no waiter");
    let second = link.call(Instant(2_000), "get_agent", Map::new());
    link.closed();
    assert!(
        matches!(link.poll_event(), Some(ClientEvent::Response { request_id, result: Err(e), .. })
        if request_id == second && e.message == "connection closed")
    );
    let refused = r#"{"request_id": "x", "ok": false, "error_code": "error", "error_message": "recipient 'b' inbox at capacity (2 >= 2)", "kind": "response"}"#;
    let mut fresh = RemoteLink::new(IdGen::default(), 1_000);
    let id = fresh.call(Instant(0), "post_envelope", Map::new());
    fresh.receive(&refused.replace("\"x\"", &format!("\"{id}\"")));
    assert!(
        matches!(fresh.poll_event(), Some(ClientEvent::Response { result: Err(e), .. }) if e.type_name == "NetworkError"),
        "InboxFull loses its type over the wire, as in ag2"
    );
}
