//! Every random draw of a network run: named ChaCha streams derived from the seed, uniform draws
//! from ranges, and model-turn durations.

use super::scenario::Range;
use crate::client::host::ThinkTime;
use crate::client::TurnOutcome;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The ChaCha stream named `name` for `seed`: streams are independent, and adding a stream
/// (a new agent, a new kind of draw) leaves the others unchanged.
pub fn stream(seed: u64, name: &str) -> ChaCha8Rng {
    // FNV-1a over the name, mixed with the seed (splitmix64 finaliser).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = hash ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// A uniform draw from `range` (no draw for a fixed value).
pub(crate) fn draw(rng: &mut ChaCha8Rng, range: Range) -> u64 {
    if range.min == range.max {
        range.min
    } else {
        rng.random_range(range.min..=range.max)
    }
}

/// Model-turn durations for one agent, from its `agent/NAME` stream.
#[derive(Clone, Debug)]
pub(crate) struct Think {
    rng: ChaCha8Rng,
    range: Range,
}

impl Think {
    /// The durations of `agent`'s turns for `seed`, drawn from `range`.
    pub(crate) fn new(seed: u64, agent: &str, range: Range) -> Think {
        Think {
            rng: stream(seed, &format!("agent/{agent}")),
            range,
        }
    }
}

impl ThinkTime for Think {
    fn turn_micros(&mut self, _outcome: &TurnOutcome) -> u64 {
        draw(&mut self.rng, self.range)
    }
}
