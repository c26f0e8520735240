//! Faults: dropped connections and re-attach, partitions and holds, latency changes, hub
//! crashes (unsynced writes lost) and restarts from the store.

use super::*;

impl World {
    /// Drops a connection at both ends; its held and in-flight messages are lost.
    pub(super) fn kill(&mut self, conn: usize, why: CloseReason) {
        if !self.net.conns[conn].alive {
            return;
        }
        let c = &mut self.net.conns[conn];
        c.alive = false;
        let held: Vec<(bool, u64, Msg)> = c
            .up_held
            .drain(..)
            .map(|(seq, msg)| (true, seq, msg))
            .chain(c.down_held.drain(..).map(|(seq, msg)| (false, seq, msg)))
            .collect();
        let (host, endpoint) = (c.host, c.endpoint);
        for (up, seq, msg) in held {
            self.lost(host, up, seq, &msg, DropReason::ConnectionClosed);
        }
        if let Some(server) = &mut self.hub.server {
            server.disconnect(endpoint);
            self.hub.dirty = true;
        }
        self.drain_hub();
        if self.net.links[host].conn == Some(conn) {
            self.monitor
                .record(self.now, Event::ConnectionClosed { agent: host, why });
            self.net.links[host].conn = None;
            self.agents.hosts[host]
                .connection_lost(Instant(self.now), &mut self.agents.thinks[host]);
            self.drain_host(host);
            self.plan_reconnect(host);
        }
    }

    fn plan_reconnect(&mut self, host: usize) {
        let Some(after) = self.options.reconnect else {
            return;
        };
        if self.agents.hosts[host].disconnected || self.agents.hosts[host].id.is_none() {
            return;
        }
        if !self.net.links[host].reconnecting {
            self.net.links[host].reconnecting = true;
            self.schedule(self.now.saturating_add(after), Ev::Reconnect(host));
        }
    }

    /// ag2's recovery path: a new `HubClient`, a hello with `since_envelope_id=""`, then
    /// `resume_pending_turns`. Retried while the hub is down or the link is cut.
    pub(super) fn reconnect(&mut self, host: usize) {
        self.net.links[host].reconnecting = false;
        if self.net.links[host].conn.is_some() || self.agents.hosts[host].disconnected {
            return;
        }
        if self.net.links[host].partitioned || self.hub.server.is_none() {
            self.plan_reconnect(host);
            return;
        }
        if self.open_connection(host) {
            self.stats.reconnects += 1;
            let connection = self.agents.hosts[host].connections();
            self.monitor.record(
                self.now,
                Event::Reattached {
                    agent: host,
                    connection,
                },
            );
            self.agents.hosts[host].attach(Instant(self.now), Some(""));
            self.drain_host(host);
        }
    }

    /// Sends what a healed link held, in order.
    fn flush_held(&mut self, host: usize) {
        let Some(conn) = self.net.links[host].conn else {
            return;
        };
        let up = std::mem::take(&mut self.net.conns[conn].up_held);
        let down = std::mem::take(&mut self.net.conns[conn].down_held);
        for (seq, msg) in up {
            self.transmit(conn, true, seq, msg);
        }
        for (seq, msg) in down {
            self.transmit(conn, false, seq, msg);
        }
    }

    pub(super) fn inject(&mut self, fault: &Fault, chaos: bool) {
        self.monitor.record(
            self.now,
            Event::Fault {
                fault: fault.clone(),
                chaos,
            },
        );
        let host = fault.agent().and_then(|name| self.host_named(name));
        match (fault, host) {
            (Fault::Partition(_), Some(h)) if !self.net.links[h].partitioned => {
                let link = &mut self.net.links[h];
                link.partitioned = true;
                link.partition_epoch += 1;
                let epoch = link.partition_epoch;
                let at = self.now.saturating_add(self.options.keepalive);
                self.schedule(at, Ev::Keepalive { host: h, epoch });
            }
            (Fault::Repair(_), Some(h)) => {
                self.net.links[h].partitioned = false;
                if !self.net.links[h].held {
                    self.flush_held(h);
                }
            }
            (Fault::Hold(_), Some(h)) => self.net.links[h].held = true,
            (Fault::Release(_), Some(h)) => {
                self.net.links[h].held = false;
                if !self.net.links[h].partitioned {
                    self.flush_held(h);
                }
            }
            (Fault::Disconnect(_), Some(h)) => {
                if let Some(conn) = self.net.links[h].conn {
                    self.kill(conn, CloseReason::Disconnect);
                }
            }
            (Fault::Latency { agent: None, range }, _) => {
                for link in &mut self.net.links {
                    link.latency = *range;
                }
            }
            (Fault::Latency { range, .. }, Some(h)) => self.net.links[h].latency = *range,
            (Fault::Crash, _) => self.crash(),
            (Fault::Restart, _) => self.restart(),
            _ => {}
        }
    }

    fn crash(&mut self) {
        self.hub.take_refused();
        let Some(server) = self.hub.server.take() else {
            return;
        };
        self.stats.crashes += 1;
        self.monitor.record(self.now, Event::HubCrashed);
        let hub = server.hub();
        if self.options.sync == 0 {
            self.hub.store = hub.snapshot();
        }
        self.hub.id_floor = self.hub.id_floor.max(hub.last_id());
        self.hub.last_hub = Some(hub.clone());
        for conn in 0..self.net.conns.len() {
            self.kill(conn, CloseReason::Crash);
        }
    }

    fn restart(&mut self) {
        if self.hub.server.is_some() {
            return;
        }
        let hydrated = Hub::hydrate(
            self.hub.config.clone(),
            &self.hub.store,
            self.hub.id_floor,
            Instant(self.now),
        );
        match hydrated {
            Ok(hub) => {
                self.hub.server = Some(serve(hub, self.hub.carry_frames));
                self.hub.refused_inbox_full = 0;
                self.clock_floor = self.now;
                self.monitor.hub_restarted();
                self.monitor.record(self.now, Event::HubRestarted);
                self.hub.synced_at = self.now;
                self.hub.dirty = false;
            }
            Err(error) => {
                let clocks = self.clocks();
                if let Some(note) = self.monitor.hub_not_restarted(clocks, &error) {
                    self.notes.push(note);
                }
            }
        }
    }

    /// Heals every fault: links repaired and released at their base latency, the hub
    /// restarted.
    pub(super) fn heal_all(&mut self) {
        self.restart();
        for host in 0..self.net.links.len() {
            self.net.links[host].partitioned = false;
            self.net.links[host].held = false;
            self.net.links[host].latency = self.options.latency;
            self.flush_held(host);
        }
    }
}
