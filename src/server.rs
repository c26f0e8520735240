//! The hub served over connections, sans-IO: text messages in, text messages out.
//!
//! [`HubServer`] owns a [`Hub`] and one queue per connection. Like ag2's `_handle_endpoint`, it
//! handles a connection's frames strictly one at a time: while the connection waits on a
//! `create_channel` ([`Hub::waiting_on`]), every later frame of it (its receipts and pings
//! included) stays queued. A handshake that ended is answered once the frame (or timer, or admin
//! call) that ended it has been handled, and the frames its connection queued meanwhile run
//! right after. A message over 1 MiB closes the connection (the `websockets` limit); a message
//! that does not decode is dropped and the connection stays open, as in ag2. Drivers move the
//! text over whatever they have (an in-memory link, a simulated network, real sockets).

use crate::hub::{Hub, Output, Refused};
use crate::ids::EndpointId;
use crate::proto::frame::{Frame, FrameError, FrameKind};
use crate::time::{Instant, Now};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};

/// Frames one connection may have waiting behind a blocked one. Past it the connection is
/// closed; ag2 would instead stop reading the socket and let TCP push back on the client.
pub const QUEUED_FRAMES_MAX: usize = 4096;

/// What the server asks its driver to do.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerOutput {
    /// Send this text message on the connection.
    Send {
        /// The connection.
        endpoint: EndpointId,
        /// The encoded frame.
        text: String,
    },
    /// Close the connection (it sent a message over the size limit).
    Close {
        /// The connection.
        endpoint: EndpointId,
    },
    /// Send this frame on the connection (when the server carries frames, see
    /// [`HubServer::carry_frames`]).
    Frame {
        /// The connection.
        endpoint: EndpointId,
        /// The frame.
        frame: Frame,
    },
}

#[derive(Clone, Debug, Default)]
struct Connection {
    queue: VecDeque<Frame>,
}

/// A hub with its connections. See the module docs.
#[derive(Clone, Debug)]
pub struct HubServer {
    hub: Hub,
    connections: BTreeMap<EndpointId, Connection>,
    outputs: VecDeque<ServerOutput>,
    frames: bool,
    /// The hub's refusals, kept for [`HubServer::poll_refused`] (`None`: not kept).
    refused: Option<VecDeque<Refused>>,
}

impl HubServer {
    /// Serves `hub`.
    pub fn new(hub: Hub) -> HubServer {
        HubServer {
            hub,
            connections: BTreeMap::new(),
            outputs: VecDeque::new(),
            frames: false,
            refused: None,
        }
    }

    /// Hands out frames ([`ServerOutput::Frame`]) instead of text: for drivers that carry
    /// frames between sans-IO peers in one process and so skip encoding and decoding. The 1 MiB
    /// message limit applies only to text.
    pub fn carry_frames(&mut self, frames: bool) {
        self.frames = frames;
    }

    /// Keeps the requests the hub refuses ([`Output::Refused`]) for
    /// [`HubServer::poll_refused`]: for drivers that check the hub from outside. A driver that
    /// turns this on must poll them.
    pub fn keep_refused(&mut self, keep: bool) {
        self.refused = keep.then(VecDeque::new);
    }

    /// The next request the hub refused, in the order it refused them (when kept, see
    /// [`HubServer::keep_refused`]).
    pub fn poll_refused(&mut self) -> Option<Refused> {
        self.refused.as_mut()?.pop_front()
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Calls the hub directly (an admin call: a sweep now, a post or close on the hub's own
    /// authority, as ag2's test runners do), then queues what the call produced (notifies,
    /// finished handshakes) like any other output.
    pub fn admin<R>(&mut self, now: Now, call: impl FnOnce(&mut Hub, Now) -> R) -> R {
        let result = call(&mut self.hub, now);
        self.flush(now);
        result
    }

    /// Accepts a new connection.
    pub fn connect(&mut self) -> EndpointId {
        let endpoint = self.hub.mint_endpoint();
        self.connections.insert(endpoint, Connection::default());
        endpoint
    }

    /// A connection ended: its bindings and queued frames go. A `create_channel` it was waiting
    /// on carries on in the hub (ag2's handler task runs to its end), and its answer is dropped.
    pub fn disconnect(&mut self, endpoint: EndpointId) {
        self.connections.remove(&endpoint);
        self.hub.close_endpoint(endpoint);
    }

    /// The next message to send or connection to close.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    /// The hub's next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.hub.poll_timeout()
    }

    /// Queues what the hub produced outside a frame or timer (see [`HubServer::admin`]).
    fn flush(&mut self, now: Now) {
        self.pump(now);
        self.resume(now);
    }

    /// Runs the hub's due timers.
    pub fn handle_timeout(&mut self, now: Now) {
        self.hub.handle_timeout(now);
        self.pump(now);
        self.resume(now);
    }

    /// One text message from `endpoint`.
    pub fn receive(&mut self, now: Now, endpoint: EndpointId, text: &str) {
        if !self.connections.contains_key(&endpoint) {
            return;
        }
        match Frame::decode(text) {
            Ok(frame) => self.receive_frame(now, endpoint, frame),
            Err(FrameError::TooLarge(_)) => {
                self.outputs.push_back(ServerOutput::Close { endpoint });
                self.disconnect(endpoint);
            }
            Err(FrameError::Undecodable(_)) => {}
        }
    }

    /// One decoded frame from `endpoint`.
    pub fn receive_frame(&mut self, now: Now, endpoint: EndpointId, frame: Frame) {
        let Some(connection) = self.connections.get_mut(&endpoint) else {
            return;
        };
        if connection.queue.len() >= QUEUED_FRAMES_MAX {
            self.outputs.push_back(ServerOutput::Close { endpoint });
            self.disconnect(endpoint);
            return;
        }
        connection.queue.push_back(frame);
        self.process(now, endpoint);
        self.resume(now);
    }

    /// Handles `endpoint`'s queued frames until it blocks on a handshake or runs dry.
    fn process(&mut self, now: Now, endpoint: EndpointId) {
        loop {
            if self.hub.waiting_on(endpoint).is_some() {
                return;
            }
            let Some(connection) = self.connections.get_mut(&endpoint) else {
                return;
            };
            let Some(frame) = connection.queue.pop_front() else {
                return;
            };
            self.hub.handle_frame(now, endpoint, frame);
            self.pump(now);
        }
    }

    /// Answers the handshakes that ended, in the order they ended, and lets their connections
    /// go on.
    fn resume(&mut self, now: Now) {
        while let Some(answer) = self.hub.poll_answer() {
            self.send(answer.endpoint, answer.frame);
            self.process(now, answer.endpoint);
        }
    }

    /// Turns the hub's outputs into messages.
    fn pump(&mut self, _now: Now) {
        while let Some(output) = self.hub.poll_output() {
            match output {
                Output::Notify {
                    endpoint,
                    recipient,
                    envelope,
                } => {
                    let frame = Frame::new(
                        FrameKind::Notify,
                        vec![
                            ("envelope", envelope.to_json()),
                            ("recipient_id", Value::String(recipient.to_string())),
                        ],
                    );
                    self.send(endpoint, frame);
                }
                Output::Frame { endpoint, frame } => self.send(endpoint, frame),
                Output::Refused(refused) => {
                    if let Some(kept) = &mut self.refused {
                        kept.push_back(refused);
                    }
                }
                Output::OpenResolved { .. } | Output::InboxPressure { .. } => {}
            }
        }
    }

    fn send(&mut self, endpoint: EndpointId, frame: Frame) {
        if !self.connections.contains_key(&endpoint) {
            return;
        }
        self.outputs.push_back(if self.frames {
            ServerOutput::Frame { endpoint, frame }
        } else {
            ServerOutput::Send {
                endpoint,
                text: frame.encode(),
            }
        });
    }
}

#[cfg(test)]
mod tests;
