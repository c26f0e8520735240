//! Reports a person opens: one self-contained HTML page per run ([`html::page`]) and an index
//! page linking several ([`html::index`]). Nothing in them loads anything from the network.

pub mod html;
