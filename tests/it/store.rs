//! Rebuilding a hub from its store (ag2's `hydrate`): for every scenario, the hub restarted from
//! a snapshot of its final state has the same channels, WALs, audit log and registry, and
//! folding each WAL from scratch gives exactly the adapter state the live hub holds.

use crate::support::sim_path;
use hubsim::hub::{Hub, HubConfig};
use hubsim::sim::runner;
use hubsim::sim::scenario::Scenario;
use hubsim::time::Instant;

#[test]
fn hydrate_rebuilds_every_scenario_and_refolds_to_the_live_state() {
    for name in &crate::support::scenario_names("") {
        let scenario = Scenario::load(&sim_path(name)).expect("loads");
        if scenario.network_only() {
            continue;
        }
        let live = runner::run(&scenario).hub;
        let store = live.snapshot();
        let hydrated = match Hub::hydrate(HubConfig::default(), &store, 0, Instant(0)) {
            Ok(hub) => hub,
            Err(error) => {
                // ag2 1.2.1 cannot reopen such a store either: a ghost channel expired by the TTL
                // sweep, or an envelope whose fold failed after its WAL append (checked on ag2).
                assert!(refold_fails(&live), "{name}: hydrate failed: {error}");
                continue;
            }
        };
        for channel in live.channel_ids() {
            let metadata = live.get_channel(channel).expect("live channel");
            let ghost = live.adapter_state(channel).is_none() && !metadata.is_terminal();
            if ghost {
                assert!(
                    hydrated.get_channel(channel).is_err(),
                    "{name}: a live ghost channel has no metadata file"
                );
                continue;
            }
            assert_eq!(
                hydrated.get_channel(channel).ok(),
                Some(metadata),
                "{name}: metadata of {channel}"
            );
            assert_eq!(
                hydrated.read_wal(channel),
                live.read_wal(channel),
                "{name}: WAL of {channel}"
            );
            if let Some(state) = live.adapter_state(channel) {
                assert_eq!(
                    hydrated.adapter_state(channel),
                    Some(state),
                    "{name}: refolded state of {channel}"
                );
            }
        }
        assert_eq!(
            hydrated.audit().records(),
            live.audit().records(),
            "{name}: audit"
        );
        let names = |hub: &Hub| hub.name_to_id().clone();
        assert_eq!(names(&hydrated), names(&live), "{name}: registry");
        assert!(
            hydrated.inbox_pending().is_empty(),
            "{name}: inbox counters are not persisted"
        );
        assert_eq!(
            hydrated.health().active_channels,
            live.health().active_channels - ghosts(&live),
            "{name}"
        );
    }
}

/// True when some stored channel cannot be rebuilt: its initial state or a WAL line fails.
fn refold_fails(hub: &Hub) -> bool {
    hub.channel_ids().any(|channel| {
        let metadata = hub.get_channel(channel).expect("listed");
        if hub.adapter_state(channel).is_none() && !metadata.is_terminal() {
            return false; // a live ghost channel is not stored
        }
        let kind = hubsim::hub::adapter::AdapterKind::of(metadata);
        match kind.initial_state(metadata) {
            Err(_) => true,
            Ok(mut state) => hub
                .read_wal(channel)
                .iter()
                .any(|envelope| state.fold(envelope).is_err()),
        }
    })
}

fn ghosts(hub: &Hub) -> usize {
    hub.channel_ids()
        .filter(|c| {
            hub.adapter_state(*c).is_none() && !hub.get_channel(*c).expect("listed").is_terminal()
        })
        .count()
}

#[test]
fn ids_continue_after_a_restart() {
    let scenario = Scenario::load(&sim_path("consulting_happy")).expect("loads");
    let live = runner::run(&scenario).hub;
    let store = live.snapshot();
    let last = live.channel_ids().last().expect("one channel").0;
    let mut hydrated =
        Hub::hydrate(HubConfig::default(), &store, last + 100, Instant(0)).expect("hydrates");
    assert!(
        hydrated.mint_endpoint().0 > last + 100,
        "ids never repeat after a restart"
    );
}
