//! The HTTP listener's connection handling: what keeps clients from holding the server.
//!
//! Each accepted connection takes a slot of a global cap and of a per-address cap (refused with
//! a plain `503` when either is full), and is served by hyper: HTTP/1.1 on plain connections;
//! with TLS (`--http-tls`), HTTP/2 or HTTP/1.1 as ALPN decided, the handshake bounded by the
//! header timeout. HTTP/1.1 connections get:
//! - a header timeout, counted from when the connection is idle (just accepted, or its previous
//!   response sent) to the end of the next request's headers: it bounds slow headers and idle
//!   keep-alive alike;
//! - a bounded header buffer (`http_max_header_bytes`);
//! - a send timeout ([`StallGuard`]): a response the client stops reading closes the connection.
//!
//! Request bodies are bounded in the control-plane pipeline (`http::control_plane`): size,
//! arrival time and the memory of all bodies in flight together. Handlers learn the client's
//! address from the [`ClientAddress`] request extension.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower_service::Service;

use crate::settings::Limits;

/// The address a request came from (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// hyper's smallest read buffer: `http_max_header_bytes` is raised to it.
const MIN_HEAD_BYTES: usize = 8192;
/// How long open connections may take to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n\
content-length: 21\r\nconnection: close\r\n\r\nToo many connections\n";

/// Connections per client address.
#[derive(Default)]
struct AddressSlots {
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`AddressSlots`]; given back on drop.
struct AddressSlot {
    slots: Arc<AddressSlots>,
    address: IpAddr,
}

impl AddressSlots {
    fn acquire(self: &Arc<Self>, address: IpAddr, limit: usize) -> Option<AddressSlot> {
        let mut held = self.held.lock().expect("address slots lock");
        let count = held.entry(address).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot { slots: self.clone(), address })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().expect("address slots lock");
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, asks open
/// connections to finish their current request, and waits for them (at most [`SHUTDOWN_GRACE`]).
/// Streams one HTTP/2 connection may carry at once (a browser's playlists, parts and preload
/// hints of several players).
const MAX_HTTP2_STREAMS: u32 = 256;

/// How connections are served: plain HTTP/1.1, or TLS with HTTP/2 or HTTP/1.1.
enum Protocols {
    Plain(http1::Builder),
    Tls(tokio_rustls::TlsAcceptor, auto::Builder<TokioExecutor>),
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.http_max_connections));
    let address_slots = Arc::new(AddressSlots::default());
    let (stop, stopping) = watch::channel(false);
    let header_timeout = Limits::seconds(limits.http_header_timeout);
    // Also what a connection can make the server buffer before its request is authenticated.
    let head_bytes = limits.http_max_header_bytes.max(MIN_HEAD_BYTES);
    let builder = Arc::new(match tls {
        None => {
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(head_bytes);
            Protocols::Plain(builder)
        }
        Some(acceptor) => {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(head_bytes);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_HTTP2_STREAMS)
                .max_header_list_size(u32::try_from(head_bytes).unwrap_or(u32::MAX))
                // A dead or silent peer is noticed by pings, as the header timeout does for HTTP/1.1.
                .keep_alive_interval(Some(header_timeout))
                .keep_alive_timeout(header_timeout);
            Protocols::Tls(acceptor, builder)
        }
    });
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("http: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(slot) = admit(&slots, &address_slots, peer, &limits) else {
            // A fresh socket's send buffer takes this at once; no task, nothing to wait for.
            let _ = socket.try_write(REFUSAL);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let router = router.clone();
        let builder = builder.clone();
        let mut stopping = stopping.clone();
        let send_timeout = Limits::seconds(limits.http_send_timeout);
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ClientAddress(peer.ip()));
                router.clone().call(request)
            });
            match &*builder {
                Protocols::Plain(http1) => {
                    let connection =
                        http1.serve_connection(TokioIo::new(StallGuard::new(socket, send_timeout)), service);
                    drive(connection, |c| c.graceful_shutdown(), &mut stopping, peer).await;
                }
                Protocols::Tls(acceptor, auto) => {
                    let stream = match tokio::time::timeout(header_timeout, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => return tracing::debug!("http: TLS handshake with {peer} failed: {error}"),
                        Err(_) => return tracing::debug!("http: TLS handshake with {peer} timed out"),
                    };
                    let connection =
                        auto.serve_connection(TokioIo::new(StallGuard::new(stream, send_timeout)), service);
                    drive(connection, |c| c.graceful_shutdown(), &mut stopping, peer).await;
                }
            }
        });
    }
    let _ = stop.send(true);
    let all = u32::try_from(limits.http_max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all)).await;
}

/// Both slots of a new connection, or `None` (refused) when either cap is full.
/// Serves a connection until it ends, or, once the server stops, lets it finish gracefully.
async fn drive<C, E>(
    connection: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    stopping: &mut watch::Receiver<bool>,
    peer: SocketAddr,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!("http: connection from {peer} closed: {error}");
            }
        }
        _ = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {
            graceful_shutdown(connection.as_mut());
            let _ = connection.await;
        }
    }
}

fn admit(
    slots: &Arc<Semaphore>,
    address_slots: &Arc<AddressSlots>,
    peer: SocketAddr,
    limits: &Limits,
) -> Option<(OwnedSemaphorePermit, AddressSlot)> {
    let Ok(global) = slots.clone().try_acquire_owned() else {
        tracing::warn!("http: connection limit ({}) reached; refusing {peer}", limits.http_max_connections);
        return None;
    };
    let Some(per_address) = address_slots.acquire(peer.ip(), limits.http_max_connections_per_address) else {
        tracing::warn!(
            "http: {} holds {} connections already; refusing another",
            peer.ip(),
            limits.http_max_connections_per_address
        );
        return None;
    };
    Some((global, per_address))
}

/// A socket whose writes fail once they have made no progress for `limit`: a client that stops
/// reading a response cannot hold the connection (and the media the response refers to).
pub struct StallGuard<S> {
    inner: S,
    limit: Duration,
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S, limit: Duration) -> StallGuard<S> {
        StallGuard { inner, limit, stalled_since: None }
    }

    /// Notes the outcome of a write: progress clears the clock; a stall starts it, and past the
    /// limit turns into an error.
    fn watch<T>(&mut self, context: &mut Context<'_>, outcome: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if outcome.is_ready() {
            self.stalled_since = None;
            return outcome;
        }
        let limit = self.limit;
        let deadline = self.stalled_since.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(context) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing of the response for the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(context, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(context, buf);
        self.watch(context, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(context, bufs);
        self.watch(context, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(context);
        self.watch(context, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_slots_are_counted_and_given_back() {
        let slots = Arc::new(AddressSlots::default());
        let address: IpAddr = [127, 0, 0, 1].into();
        let first = slots.acquire(address, 2).unwrap();
        let _second = slots.acquire(address, 2).unwrap();
        assert!(slots.acquire(address, 2).is_none());
        assert!(slots.acquire([127, 0, 0, 2].into(), 2).is_some());
        drop(first);
        assert!(slots.acquire(address, 2).is_some());
    }

    #[tokio::test]
    async fn a_stalled_write_fails_after_the_limit() {
        use tokio::io::AsyncWriteExt;
        let (client, server) = tokio::io::duplex(1024);
        let mut guarded = StallGuard::new(server, Duration::from_millis(200));
        let started = std::time::Instant::now();
        // Nobody reads `client`: the pipe fills and the write stalls.
        let outcome = guarded.write_all(&vec![0u8; 64 * 1024]).await;
        assert_eq!(outcome.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(client);
    }
}
