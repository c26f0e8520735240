//! Faults: dropped connections and re-attach, partitions and holds, latency changes, hub
//! crashes (unsynced writes lost) and restarts from the store.

use super::*;

impl World {
    /// Drops a connection at both ends; its held and in-flight messages are lost.
    pub(super) fn kill(&mut self, conn: usize) {
        if !self.conns[conn].alive {
            return;
        }
        let c = &mut self.conns[conn];
        c.alive = false;
        self.stats.lost += (c.up_held.len() + c.down_held.len()) as u64;
        c.up_held.clear();
        c.down_held.clear();
        let (host, endpoint) = (c.host, c.endpoint);
        if let Some(server) = &mut self.server {
            server.disconnect(endpoint);
            self.dirty = true;
        }
        self.drain_hub();
        if self.links[host].conn == Some(conn) {
            self.links[host].conn = None;
            self.hosts[host].connection_lost(Instant(self.now), &mut self.thinks[host]);
            self.drain_host(host);
            self.plan_reconnect(host);
        }
    }

    pub(super) fn plan_reconnect(&mut self, host: usize) {
        let Some(after) = self.options.reconnect else {
            return;
        };
        if self.hosts[host].disconnected || self.hosts[host].id.is_none() {
            return;
        }
        if !self.links[host].reconnecting {
            self.links[host].reconnecting = true;
            self.schedule(self.now.saturating_add(after), Ev::Reconnect(host));
        }
    }

    /// ag2's recovery path: a new `HubClient`, a hello with `since_envelope_id=""`, then
    /// `resume_pending_turns`. Retried while the hub is down or the link is cut.
    pub(super) fn reconnect(&mut self, host: usize) {
        self.links[host].reconnecting = false;
        if self.links[host].conn.is_some() || self.hosts[host].disconnected {
            return;
        }
        if self.links[host].partitioned || self.server.is_none() {
            self.plan_reconnect(host);
            return;
        }
        if self.connect(host) {
            self.stats.reconnects += 1;
            self.hosts[host].attach(Instant(self.now), Some(""));
            self.drain_host(host);
        }
    }

    /// Sends what a healed link held, in order.
    pub(super) fn flush_held(&mut self, host: usize) {
        let Some(conn) = self.links[host].conn else {
            return;
        };
        let up = std::mem::take(&mut self.conns[conn].up_held);
        let down = std::mem::take(&mut self.conns[conn].down_held);
        for text in up {
            self.send(conn, true, text);
        }
        for text in down {
            self.send(conn, false, text);
        }
    }

    pub(super) fn apply(&mut self, fault: &Fault) {
        let host = fault.agent().and_then(|name| self.host_named(name));
        match (fault, host) {
            (Fault::Partition(_), Some(h)) if !self.links[h].partitioned => {
                let link = &mut self.links[h];
                link.partitioned = true;
                link.partition_epoch += 1;
                let epoch = link.partition_epoch;
                let at = self.now.saturating_add(self.options.keepalive);
                self.schedule(at, Ev::Keepalive { host: h, epoch });
            }
            (Fault::Repair(_), Some(h)) => {
                self.links[h].partitioned = false;
                if !self.links[h].held {
                    self.flush_held(h);
                }
            }
            (Fault::Hold(_), Some(h)) => self.links[h].held = true,
            (Fault::Release(_), Some(h)) => {
                self.links[h].held = false;
                if !self.links[h].partitioned {
                    self.flush_held(h);
                }
            }
            (Fault::Disconnect(_), Some(h)) => {
                if let Some(conn) = self.links[h].conn {
                    self.kill(conn);
                }
            }
            (Fault::Latency { agent: None, range }, _) => {
                for link in &mut self.links {
                    link.latency = *range;
                }
            }
            (Fault::Latency { range, .. }, Some(h)) => self.links[h].latency = *range,
            (Fault::Crash, _) => self.crash(),
            (Fault::Restart, _) => self.restart(),
            _ => {}
        }
    }

    pub(super) fn crash(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        self.stats.crashes += 1;
        let hub = server.hub();
        if self.options.sync == 0 {
            self.store = hub.snapshot();
        }
        self.id_floor = self.id_floor.max(hub.last_id());
        self.last_hub = Some(hub.clone());
        for conn in 0..self.conns.len() {
            self.kill(conn);
        }
    }

    pub(super) fn restart(&mut self) {
        if self.server.is_some() {
            return;
        }
        match Hub::hydrate(
            self.config.clone(),
            &self.store,
            self.id_floor,
            Instant(self.now),
        ) {
            Ok(hub) => {
                self.server = Some(serve(hub, self.options.text_wire));
                self.clock_floor = self.now;
                self.checker.hub_restarted();
                self.synced_at = self.now;
                self.dirty = false;
            }
            Err(error) => {
                let message = format!(
                    "the hub did not restart from its store: {}: {}",
                    error.type_name, error.message
                );
                if self
                    .checker
                    .selection()
                    .has(crate::sim::check::Invariant::Settle)
                {
                    let mut checker = std::mem::take(&mut self.checker);
                    checker.record(&self.view(None), "settle/hub_not_restarted", message);
                    self.checker = checker;
                } else {
                    self.notes
                        .push(format!("at {}: {message}", seconds(self.now)));
                }
            }
        }
    }

    /// Heals every fault: links repaired and released at their base latency, the hub
    /// restarted.
    pub(super) fn heal(&mut self) {
        self.restart();
        for host in 0..self.links.len() {
            self.links[host].partitioned = false;
            self.links[host].held = false;
            self.links[host].latency = self.options.latency;
            self.flush_held(host);
        }
    }
}
