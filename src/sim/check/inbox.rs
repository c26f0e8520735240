//! `inbox`: pending never above `max_pending`. (Refused sends: [`Checker::check_refusal`].)

use super::{Checker, View};
use crate::hub::Hub;

impl Checker {
    pub(super) fn check_pending(&mut self, view: &View<'_>, hub: &Hub) {
        for (agent, pending) in hub.inbox_pending() {
            let Some(entry) = hub.agents.get(agent) else {
                continue;
            };
            let cap = entry.rule.limits.inbox.max_pending;
            // A cap lowered by `set_rule` below what is pending is not a breach; pending
            // growing while above the cap is.
            let previous = self.pending.insert(*agent, *pending).unwrap_or(0);
            if cap > 0 && *pending as i64 > cap && *pending > previous {
                self.report(
                    view,
                    "inbox/over_cap",
                    agent.to_string(),
                    format!(
                        "{} has {pending} pending deliveries (up from {previous}), above its \
                         max_pending {cap}",
                        entry.passport.name
                    ),
                );
            }
        }
    }
}
