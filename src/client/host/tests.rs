//! Agent hosts talking to a `HubServer` over an in-memory text loop with no latency.

use super::*;
use crate::client::TurnItem;
use crate::hub::{Hub, HubConfig};
use crate::ids::EndpointId;
use crate::server::{HubServer, ServerOutput};
use crate::time::{Now, Timestamp, DEFAULT_EPOCH};

struct Net {
    server: HubServer,
    hosts: Vec<(EndpointId, AgentHost)>,
    now: Instant,
}

fn agent(name: &str, replies: &[&str]) -> ScriptedAgent {
    ScriptedAgent {
        name: name.to_string(),
        handler: HandlerMode::Default,
        tools: Vec::new(),
        turns: replies
            .iter()
            .map(|r| vec![TurnItem::Text(r.to_string())])
            .collect(),
        used: 0,
    }
}

impl Net {
    fn new(agents: Vec<ScriptedAgent>) -> Net {
        let config = HubConfig {
            ttl_sweep_interval_micros: 0,
            expectation_sweep_interval_micros: 0,
            ..HubConfig::default()
        };
        let mut net = Net {
            server: HubServer::new(Hub::new(config, Instant(0))),
            hosts: Vec::new(),
            now: Instant(0),
        };
        for model in agents {
            let endpoint = net.server.connect();
            let mut host = AgentHost::with_default_timeout(model);
            host.connected();
            net.hosts.push((endpoint, host));
            let idx = net.hosts.len() - 1;
            let rule = wire::rule_json(&crate::hub::rule::Rule::default());
            net.command(idx, Command::Register { rule })
                .expect("registers");
        }
        net
    }

    fn command(&mut self, idx: usize, command: Command) -> Result<Value, HubError> {
        let id = self.hosts[idx].1.command(self.now, command, &mut 0);
        self.pump();
        let result = self.hosts[idx].1.poll_result();
        let (done, result) = result.expect("the command finished");
        assert_eq!(done, id);
        result
    }

    fn pump(&mut self) {
        let now = Now {
            wall: Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch"),
            mono: self.now,
        };
        loop {
            let mut moved = false;
            for (endpoint, host) in &mut self.hosts {
                if host.poll_timeout().is_some_and(|at| at <= self.now) {
                    host.handle_timeout(self.now, &mut 0);
                }
                while let Some(text) = host.poll_send() {
                    self.server.receive(now, *endpoint, &text);
                    moved = true;
                }
            }
            while let Some(output) = self.server.poll_output() {
                moved = true;
                if let ServerOutput::Send { endpoint, text } = output {
                    if let Some((_, host)) = self.hosts.iter_mut().find(|(e, _)| *e == endpoint) {
                        host.receive(self.now, &text, &mut 0);
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }
}

#[test]
fn consulting_over_rpcs_posts_the_reply_and_closes_the_channel() {
    let mut net = Net::new(vec![agent("alice", &[]), agent("bob", &["an answer"])]);
    let open = Command::Open(Box::new(OpenRequest {
        targets: vec!["bob".into()],
        manifest_type: "consulting".into(),
        ttl: Value::Null,
        knobs: Value::Null,
        intent: Value::Null,
        labels: Value::Null,
    }));
    let metadata = net.command(0, open).expect("opens");
    let channel = ChannelId::parse(metadata["channel_id"].as_str().expect("id")).expect("id");
    let alice = net.hosts[0].1.id.expect("registered");
    let question = Envelope::new(
        channel,
        alice,
        None,
        EventType::TEXT,
        map_of([("text", Value::from("why?"))]),
    );
    net.command(0, Command::Post(Box::new(question)))
        .expect("posts");
    let hub = net.server.hub();
    let wal: Vec<&str> = hub
        .read_wal(channel)
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        wal,
        [
            "ag2.channel.invite",
            "ag2.channel.invite.ack",
            "ag2.channel.opened",
            "ag2.msg.text",
            "ag2.msg.text",
            "ag2.channel.closed"
        ]
    );
    assert_eq!(hub.read_wal(channel)[4].event_data["text"], "an answer");
    assert_eq!(net.hosts[1].1.model.used, 1);
    assert!(net.hosts.iter().all(|(_, host)| host.is_idle()));
    // Every delivery was acked: both cursors sit at the last envelope each was sent.
    let last = hub.read_wal(channel)[5].id_text();
    assert_eq!(hub.inbox_cursor(alice, &channel.to_string()), last);
}

#[test]
fn a_dropped_connection_fails_the_calls_in_flight_and_an_unregistered_client_refuses_to_post() {
    let mut net = Net::new(vec![agent("alice", &[])]);
    let id = net.hosts[0].1.command(
        Instant(0),
        Command::SetRule {
            rule: wire::rule_json(&crate::hub::rule::Rule::default()),
        },
        &mut 0,
    );
    net.hosts[0].1.connection_lost(Instant(0), &mut 0);
    let (done, result) = net.hosts[0].1.poll_result().expect("failed at once");
    assert_eq!(done, id);
    assert_eq!(result, Err(HubError::runtime("connection closed")));
    assert!(!net.hosts[0].1.is_connected());
    net.hosts[0].0 = net.server.connect();
    net.hosts[0].1.connected();
    let refused = net.command(0, Command::Unregister);
    assert_eq!(
        refused.map_err(|e| e.type_name),
        Err("AccessDeniedError".to_string()),
        "the new connection is not bound until a hello"
    );
    assert!(!net.hosts[0].1.disconnected);
    net.hosts[0].1.disconnected = true;
    let alice = net.hosts[0].1.id.expect("registered");
    let post = Envelope::new(ChannelId(1), alice, None, EventType::TEXT, Map::new());
    assert_eq!(
        net.command(0, Command::Post(Box::new(post))),
        Err(disconnected_error())
    );
}
