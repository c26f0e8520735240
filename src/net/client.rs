//! The client side of the WebSocket transport: a WebSocket over a given stream, exchanging
//! whole messages, with the hub's 1 MiB read limits.

use super::ws::{config, CLOSE_TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// What [`WsClient::recv`] got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// The connection ended: the peer's close code if it sent one.
    Closed(Option<u16>),
}

/// A WebSocket client over a given stream, exchanging whole messages.
#[derive(Debug)]
pub struct WsClient<S> {
    socket: WebSocketStream<S>,
}

impl<S> WsClient<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Opens a WebSocket to `url` (its host and path go in the request) over `stream`, with the
    /// same 1 MiB read limits as the hub.
    ///
    /// # Errors
    /// A malformed URL, a failed handshake or an IO error.
    pub async fn connect(stream: S, url: &str) -> Result<WsClient<S>, WsError> {
        let (socket, _response) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config())).await?;
        Ok(WsClient { socket })
    }

    /// Sends one text message.
    ///
    /// # Errors
    /// A closed connection or an IO error.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), WsError> {
        self.socket.send(Message::text(text.into())).await
    }

    /// Sends one binary message.
    ///
    /// # Errors
    /// A closed connection or an IO error.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), WsError> {
        self.socket.send(Message::binary(bytes)).await
    }

    /// The next data message, or the end of the connection. Control frames are skipped
    /// (tungstenite answers pings itself).
    ///
    /// # Errors
    /// A protocol violation, a message over 1 MiB, or an IO error other than the peer going away.
    pub async fn recv(&mut self) -> Result<Received, WsError> {
        loop {
            let message = match self.socket.next().await {
                None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Ok(Received::Closed(None))
                }
                Some(Err(error)) => return Err(error),
                Some(Ok(message)) => message,
            };
            match message {
                Message::Text(text) => return Ok(Received::Text(text.as_str().to_owned())),
                Message::Binary(bytes) => return Ok(Received::Binary(bytes.to_vec())),
                Message::Close(frame) => {
                    return Ok(Received::Closed(frame.map(|f| u16::from(f.code))))
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Closes the connection (closing handshake, bounded by [`CLOSE_TIMEOUT`]).
    ///
    /// # Errors
    /// An IO error while closing.
    pub async fn close(mut self) -> Result<(), WsError> {
        match tokio::time::timeout(CLOSE_TIMEOUT, self.socket.close(None)).await {
            Ok(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) | Err(_) => Ok(()),
            Ok(result) => result,
        }
    }

    /// The underlying WebSocket, for drivers that split it into a reader and a writer.
    pub fn into_inner(self) -> WebSocketStream<S> {
        self.socket
    }
}
