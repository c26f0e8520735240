//! The random fault profile (`chaos:`): swarm testing. Per seed, each fault kind the scenario
//! allows is switched on or off and, when on, given a rate; its faults then arrive at drawn
//! times until `chaos.until`, each on a drawn agent and, for the kinds that heal, healed after
//! a drawn duration. Each kind draws from its own `chaos/KIND` stream. Times count from the
//! end of registration (the first step); the phase runs from `chaos.from` to `chaos.until`.

use super::random::{draw, stream};
use super::scenario::{Chaos, ChaosKind, Fault, Range};
use crate::time::MICROS_PER_SECOND;
use rand::Rng;

/// The chaos phase's faults for `seed`, at times from the end of registration, on the agents
/// `names`; a latency fault is healed back to `base`.
pub(crate) fn schedule(
    chaos: &Chaos,
    seed: u64,
    names: &[String],
    base: Range,
) -> Vec<(u64, Fault)> {
    let mut faults = Vec::new();
    if names.is_empty() {
        return faults;
    }
    for kind in &chaos.kinds {
        let mut rng = stream(seed, &format!("chaos/{}", kind.name()));
        if !rng.random_bool(0.5) {
            continue;
        }
        let rate = rng.random_range(chaos.rate.0..=chaos.rate.1);
        // Gaps uniform on [0, 2/rate] seconds: mean 1/rate, integer draws only.
        let mean = (MICROS_PER_SECOND as f64 / rate) as u64;
        let mut at = chaos.from;
        loop {
            at = at.saturating_add(rng.random_range(0..=mean.saturating_mul(2)));
            if at >= chaos.until {
                break;
            }
            let agent = names[rng.random_range(0..names.len())].clone();
            let lasts = draw(&mut rng, chaos.duration);
            let heal = at.saturating_add(lasts);
            let (fault, healing) = match kind {
                ChaosKind::Partition => {
                    (Fault::Partition(agent.clone()), Some(Fault::Repair(agent)))
                }
                ChaosKind::Hold => (Fault::Hold(agent.clone()), Some(Fault::Release(agent))),
                ChaosKind::Disconnect => (Fault::Disconnect(agent), None),
                ChaosKind::Crash => (Fault::Crash, Some(Fault::Restart)),
                ChaosKind::Latency => (
                    Fault::Latency {
                        agent: Some(agent.clone()),
                        range: chaos.latency,
                    },
                    Some(Fault::Latency {
                        agent: Some(agent),
                        range: base,
                    }),
                ),
            };
            faults.push((at, fault));
            if let Some(healing) = healing {
                faults.push((heal, healing));
            }
        }
    }
    faults
}
