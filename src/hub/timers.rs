//! Time-driven work: the TTL sweep (`expire_due`), the expectation sweep, the invite-ack
//! timeout, and the deadline the driver must wake the hub at.

use super::channel::ChannelState;
use super::expectations::{evaluate, has_evaluator, has_handler};
use super::Hub;
use crate::ids::ChannelId;
use crate::proto::envelope::map_of;
use crate::proto::{Envelope, EventType};
use crate::time::{Instant, Now};
use serde_json::Value;

impl Hub {
    /// The earliest deadline of a pending open or an enabled sweeper.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let invites = self.waiters.values().map(|waiter| waiter.deadline).min();
        [invites, self.next_ttl_sweep, self.next_expectation_sweep]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs everything due at `now.mono`: invite-ack timeouts first (in deadline order), then the
    /// sweepers. A sweeper sleeps one interval after each run, as ag2's does.
    pub fn handle_timeout(&mut self, now: Now) {
        let mut due: Vec<(Instant, ChannelId)> = self
            .waiters
            .iter()
            .filter(|(_, waiter)| waiter.deadline <= now.mono)
            .map(|(channel, waiter)| (waiter.deadline, *channel))
            .collect();
        due.sort();
        for (_, channel) in due {
            self.expire_invites(now, channel);
        }
        if self.next_ttl_sweep.is_some_and(|at| at <= now.mono) {
            self.expire_due(now);
            self.next_ttl_sweep = Some(now.mono.plus_micros(self.config.ttl_sweep_interval_micros));
        }
        if self.next_expectation_sweep.is_some_and(|at| at <= now.mono) {
            self.expectation_tick(now);
            self.next_expectation_sweep = Some(
                now.mono
                    .plus_micros(self.config.expectation_sweep_interval_micros),
            );
        }
    }

    /// ag2's `expire_due`: expire every PENDING or ACTIVE channel whose `expires_at` is at or
    /// before now (`ttl_expired`), then every non-terminal task past its own `expires_at`.
    ///
    /// ag2 compares the ISO strings; hubsim compares instants, which agrees whenever one clock
    /// format is used (the reference runner's case).
    pub fn expire_due(&mut self, now: Now) {
        let late = if self.config.bugs.late_expiry {
            self.config.ttl_sweep_interval_micros as i64
        } else {
            0
        };
        let due: Vec<ChannelId> = self
            .active
            .iter()
            .copied()
            .filter(|channel| {
                self.channels[channel]
                    .metadata
                    .expires_at
                    .is_some_and(|at| at.micros.saturating_add(late) <= now.wall.micros)
            })
            .collect();
        for channel in due {
            self.transition(now, channel, ChannelState::Expired, "ttl_expired");
        }
        self.expire_tasks(now);
    }

    /// ag2's `_expectation_tick`: evaluate every manifest expectation of every PENDING or ACTIVE
    /// channel; for each new `(index, violator)` key audit it and run its handler. Keys fire at
    /// most once per channel lifetime; an `auto_close` ends the channel's evaluation.
    pub fn expectation_tick(&mut self, now: Now) {
        let channels: Vec<ChannelId> = self.active.iter().copied().collect();
        for channel in channels {
            let Some(entry) = self.channels.get(&channel) else {
                continue;
            };
            let expectations = entry.metadata.manifest.expectations;
            'expectations: for (idx, expectation) in expectations.iter().enumerate() {
                if !has_evaluator(expectation.name) {
                    continue;
                }
                let entry = &self.channels[&channel];
                let Some(violation) = evaluate(expectation, &entry.metadata, &entry.wal, now.wall)
                else {
                    continue;
                };
                if !has_handler(expectation.on_violation) {
                    continue;
                }
                let keys: Vec<String> = if violation.violators.is_empty() {
                    vec![String::new()]
                } else {
                    violation
                        .violators
                        .iter()
                        .map(ToString::to_string)
                        .collect()
                };
                for key in keys {
                    let entry = self
                        .channels
                        .get_mut(&channel)
                        .expect("evaluated channel exists");
                    if !entry.fired.insert((idx, key)) {
                        continue;
                    }
                    self.audit
                        .expectation_violated(now.wall, channel, expectation, &violation);
                    match expectation.on_violation {
                        "notify_channel" => {
                            self.notify_violation(now, channel, expectation.name, &violation)
                        }
                        "auto_close" => {
                            let reason = format!("expectation_violated:{}", expectation.name);
                            let _ = self.close_channel(now, channel, &reason);
                            break 'expectations;
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The `notify_channel` handler: a violation envelope from the creator to the channel,
    /// through the full post path, errors suppressed.
    fn notify_violation(
        &mut self,
        now: Now,
        channel: ChannelId,
        name: &str,
        violation: &super::expectations::Violation,
    ) {
        let metadata = &self.channels[&channel].metadata;
        if metadata.is_terminal() {
            return;
        }
        let data = map_of([
            ("expectation", Value::from(name)),
            (
                "violators",
                Value::Array(
                    violation
                        .violators
                        .iter()
                        .map(|v| Value::String(v.to_string()))
                        .collect(),
                ),
            ),
            ("detail", Value::Object(violation.detail.clone())),
        ]);
        let envelope = Envelope::new(
            channel,
            metadata.creator_id,
            None,
            EventType::EXPECTATION_VIOLATED,
            data,
        );
        let _ = self.post_envelope(now, envelope);
    }
}
