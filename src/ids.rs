//! Identifiers: 128-bit newtypes printed as 32 lowercase hex characters, like ag2's `make_id()`.
//!
//! ag2 mints ids from the wall clock and random bytes; hubsim mints them from one counter shared
//! by every id kind ([`IdGen`]), as the reference runner does, so ids sort in mint order (cursors
//! and replay compare them as strings) and a run is reproducible.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u128);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }

        impl $name {
            /// Parses the 32-lowercase-hex form; anything else is not an id of this kind.
            pub fn parse(text: &str) -> Option<$name> {
                parse_hex32(text).map($name)
            }
        }
    };
}

id_type!(
    /// A registered agent (passport) id.
    AgentId
);
id_type!(
    /// A channel id.
    ChannelId
);
id_type!(
    /// An envelope id, stamped by the hub on accept. Within one hub, ids increase in mint order.
    EnvelopeId
);
id_type!(
    /// A connection (link endpoint) id.
    EndpointId
);

/// A channel id no hub ever mints (`"f" * 32`): the reference runner's `unknown_channel`.
pub const UNKNOWN_CHANNEL: ChannelId = ChannelId(u128::MAX);

/// True when `text` is exactly 32 lowercase hex digits: the shape of a minted id.
pub fn is_hex32(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_hex32(text: &str) -> Option<u128> {
    if !is_hex32(text) {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}

/// The one counter every id comes from. Ids start at 1.
#[derive(Clone, Debug, Default)]
pub struct IdGen {
    last: u128,
}

impl IdGen {
    /// The next raw id value.
    pub fn next_raw(&mut self) -> u128 {
        self.last += 1;
        assert!(self.last < u128::MAX, "id space exhausted");
        self.last
    }

    /// The last value minted (0 before the first).
    pub fn last(&self) -> u128 {
        self.last
    }

    /// A generator that continues after `last` (used when a hub is rebuilt from its store).
    pub fn starting_after(last: u128) -> IdGen {
        IdGen { last }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_32_hex_and_parse_back() {
        let mut ids = IdGen::default();
        let agent = AgentId(ids.next_raw());
        assert_eq!(agent.to_string(), "00000000000000000000000000000001");
        assert_eq!(AgentId::parse(&agent.to_string()), Some(agent));
        assert_eq!(UNKNOWN_CHANNEL.to_string(), "f".repeat(32));
        assert_eq!(AgentId::parse("0000000000000000000000000000000G"), None);
        assert_eq!(AgentId::parse("00000000000000000000000000000000A"), None);
    }
}
