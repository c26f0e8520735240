//! The invariant checkers' hooks (a [`View`] of the run, the checks after steps and hub
//! timers, the refused-post comparison around each hub input) and the end of a run: the
//! quiesce phase, the final checks, the [`NetRun`].

use super::*;

impl World {
    /// Runs the invariant checkers on the run as it is now.
    pub(super) fn check(&mut self, step: Option<usize>) {
        if self.checker.selection() == check::Selection::NONE {
            return;
        }
        let mut checker = std::mem::take(&mut self.checker);
        checker.check(&self.view(step));
        self.checker = checker;
    }

    pub(super) fn view(&self, step: Option<usize>) -> View<'_> {
        View {
            hub: self.server.as_ref().map(HubServer::hub),
            hosts: &self.hosts,
            now: self.now,
            step,
            frozen_clock: self.options.frozen_clock,
            mock: self.mock,
            clock_floor: self.clock_floor,
            ttl_sweep: self.options.ttl_sweep,
        }
    }

    /// The hub's count of refused posts that left a trace, if the `inbox` invariant is checked.
    pub(super) fn refusal_mark(&self) -> Option<u64> {
        if !self.checker.selection().has(check::Invariant::Inbox) {
            return None;
        }
        Some(self.server.as_ref()?.hub().refusals().with_trace)
    }

    /// A refused post must leave the hub's WAL and audit log as they were.
    pub(super) fn check_refusals(&mut self, mark: Option<u64>) {
        let Some(hub) = self.server.as_ref().map(HubServer::hub) else {
            return;
        };
        let refusals = hub.refusals();
        if let (Some(mark), Some((before, after))) = (mark, refusals.last_trace) {
            if refusals.with_trace > mark {
                let mut checker = std::mem::take(&mut self.checker);
                checker.check_refusal(&self.view(None), true, before, after);
                self.checker = checker;
            }
        }
    }

    /// The quiesce phase (heal, then settle within `network.quiesce`), the final checks, and
    /// what the trace is rendered from.
    pub(super) fn finish(mut self, scenario: &Scenario) -> NetRun {
        self.heal();
        let deadline = self.now.saturating_add(self.options.quiesce);
        let settled = self.run_until(deadline, &|world| !world.busy());
        if self.checker.selection() != check::Selection::NONE {
            let mut checker = std::mem::take(&mut self.checker);
            let view = self.view(None);
            if self.aborted {
                checker.record(
                    &view,
                    "settle/runaway",
                    format!(
                        "the run fired more than {} events by {} and was stopped",
                        self.options.events_max,
                        seconds(self.now)
                    ),
                );
            } else if !settled {
                checker.record(
                    &view,
                    "settle/not_settled",
                    format!(
                        "work was still under way {} after the last step with every fault healed",
                        seconds(self.options.quiesce)
                    ),
                );
            }
            checker.finish(&view, settled && self.server.is_some());
            self.checker = checker;
        }
        self.finish_background(scenario);
        let hub = match (&self.server, self.last_hub.take()) {
            (Some(server), _) => server.hub().clone(),
            (None, Some(hub)) => hub,
            (None, None) => Hub::new(self.config.clone(), Instant(self.now)),
        };
        let mut auto = 0;
        for channel in hub.channel_ids().collect::<Vec<_>>() {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.labels.entry(channel) {
                auto += 1;
                slot.insert(format!("auto{auto}"));
            }
        }
        self.stats.sim_micros = self.now;
        let logs = self
            .hosts
            .iter_mut()
            .map(|host| std::mem::take(&mut host.log))
            .collect();
        let agents = self
            .hosts
            .into_iter()
            .map(|host| RunAgent {
                id: host.id.unwrap_or(crate::ids::AgentId(0)),
                model: host.model,
            })
            .collect();
        NetRun {
            run: Run {
                hub,
                agents,
                labels: self.labels,
                steps: self.steps,
                mismatches: self.mismatches,
                epoch: scenario.hub.epoch,
            },
            stats: self.stats,
            notes: self.notes,
            violations: self.checker.into_violations(),
            logs,
            chaos_start: self.chaos_start,
        }
    }
}
