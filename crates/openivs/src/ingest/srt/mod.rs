//! SRT ingest: `srt://{srt.endpoint}:9000?streamid={streamKey}&passphrase={srt.passphrase}`, as
//! IVS answers it. The stream id is the stream key; the channel's `srt.passphrase` encrypts the
//! connection (AES, any key length the caller picks), and a caller without it, or with another,
//! is refused in the handshake. A channel with `insecureIngest` also takes unencrypted SRT (a
//! wrong passphrase is still refused). The payload is MPEG-TS (H.264 and AAC), demuxed into the
//! same [`Publish`] as RTMP's media, so everything downstream behaves the same; one publisher per
//! channel across RTMP, RTMPS and SRT. Lost and late packets are retransmitted within the
//! latency window (`--srt-latency`, the larger of ours and the caller's).
//!
//! libsrt ([`libsrt`]) runs the protocol on its own threads: the handshake callback decides on
//! the key (a store lookup from libsrt's thread), one thread accepts, and each connection has a
//! thread that receives (blocking, with a timeout) and hands the bytes to an async task that
//! publishes them.

pub mod libsrt;

use std::ffi::{CStr, c_char, c_int, c_void};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openivs_media::ts_demux::{AccessUnit, AccessUnits, TsDemuxer};
use tokio::sync::{Semaphore, mpsc, watch};

use self::libsrt::{KeyState, Libsrt, RejectReason, Socket};
use super::publish::{self, Outcome, Publish};
use super::{IngestContext, Refusal};
use crate::live::hub::TrackKind;

/// How long the handshake callback waits for the store before refusing.
const AUTHORIZE_WITHIN: Duration = Duration::from_secs(3);
/// Messages a connection's receiving thread may hold for its task (about 6 MB at most).
const QUEUE: usize = 4096;
/// How long a receive waits before its thread checks whether the stream was stopped.
const RECEIVE_TIMEOUT_MS: i32 = 500;

/// What the handshake callback needs; lives as long as the process.
struct Handshakes {
    libsrt: Arc<Libsrt>,
    context: Arc<IngestContext>,
    runtime: tokio::runtime::Handle,
}

/// The stream key an SRT stream id carries: the whole id, or the `r=` field of the SRT access
/// control syntax (`#!::r=KEY,m=publish`) that some encoders send.
fn stream_key_of(stream_id: &str) -> &str {
    match stream_id.strip_prefix("#!::") {
        Some(fields) => fields.split(',').find_map(|field| field.strip_prefix("r=")).unwrap_or(""),
        None => stream_id.trim(),
    }
}

/// libsrt's handshake callback: a key that names no channel is refused; otherwise the
/// connection must match the channel's passphrase (unless the channel takes insecure ingest).
unsafe extern "C" fn on_handshake(
    opaque: *mut c_void,
    socket: Socket,
    hs_version: c_int,
    _peer: *const c_void,
    stream_id: *const c_char,
) -> c_int {
    // A panic must not unwind into C.
    std::panic::catch_unwind(|| {
        // SAFETY: `opaque` is the leaked `Handshakes` the listener was given.
        let handshakes = unsafe { &*(opaque as *const Handshakes) };
        let stream_id = if stream_id.is_null() {
            String::new()
        } else {
            // SAFETY: libsrt passes a NUL-terminated string.
            unsafe { CStr::from_ptr(stream_id) }.to_string_lossy().into_owned()
        };
        match decide(handshakes, socket, hs_version, &stream_id) {
            Ok(()) => 0,
            Err(reason) => {
                handshakes.libsrt.reject(socket, reason);
                -1
            }
        }
    })
    .unwrap_or(-1)
}

fn decide(handshakes: &Handshakes, socket: Socket, hs_version: c_int, stream_id: &str) -> Result<(), RejectReason> {
    // Stream ids came with handshake version 5 (libsrt 1.3).
    if hs_version < 5 {
        return Err(RejectReason::BadRequest);
    }
    let stream_key = stream_key_of(stream_id);
    let context = handshakes.context.clone();
    let key = stream_key.to_owned();
    let authorized = handshakes
        .runtime
        .block_on(async move { tokio::time::timeout(AUTHORIZE_WITHIN, context.authorize(&key, true)).await });
    let authorized = match authorized {
        Ok(Ok(authorized)) => authorized,
        Ok(Err(refusal)) => {
            tracing::info!("ingest: SRT publish refused: {refusal:?}");
            let unknown = refusal == Refusal::UnknownStreamKey;
            return Err(if unknown { RejectReason::Forbidden } else { RejectReason::Unavailable });
        }
        Err(_) => return Err(RejectReason::Unavailable),
    };
    let channel = &authorized.channel;
    // (Refused here, the caller learns why; a stream its failover slate holds is taken over.)
    if handshakes.context.live.stream(&channel.arn).is_some_and(|live| !live.awaits_comeback()) {
        tracing::info!("ingest: SRT publish refused: {:?}", Refusal::AlreadyLive);
        return Err(RejectReason::Conflict);
    }
    let libsrt = &handshakes.libsrt;
    if !libsrt.set_passphrase(socket, &channel.srt.passphrase)
        || !libsrt.set_enforced_encryption(socket, !channel.insecure_ingest)
    {
        tracing::warn!("ingest: SRT: cannot set the passphrase: {}", libsrt.last_error());
        return Err(RejectReason::Unavailable);
    }
    Ok(())
}

/// The SRT listener: bound first (the channels' `srt.endpoint` names its port), then started.
pub struct SrtListener {
    libsrt: Arc<Libsrt>,
    socket: Socket,
    pub addr: SocketAddr,
}

/// Binds the SRT listener on `addr` (UDP).
pub fn bind(libsrt: Arc<Libsrt>, addr: SocketAddr, latency: Duration) -> Result<SrtListener, String> {
    let latency_ms = latency.as_millis().min(u128::from(u32::MAX)) as u32;
    let (socket, addr) = libsrt.bind(addr, latency_ms)?;
    Ok(SrtListener { libsrt, socket, addr })
}

/// Accepts connections (on a thread of its own) until `shutdown` turns true.
pub fn listen(
    listener: SrtListener,
    context: Arc<IngestContext>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let SrtListener { libsrt, socket: listener, .. } = listener;
    let runtime = tokio::runtime::Handle::current();
    let handshakes = Box::leak(Box::new(Handshakes { libsrt: libsrt.clone(), context: context.clone(), runtime }));
    // SAFETY: `handshakes` is leaked (lives for the process); `on_handshake` catches panics.
    unsafe { libsrt.listen(listener, on_handshake, (handshakes as *const Handshakes).cast_mut().cast()) }?;
    let slots = Arc::new(Semaphore::new(context.limits.ingest_max_connections));
    let accepting = libsrt.clone();
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("srt-accept".into())
        .spawn(move || {
            while let Some((socket, peer)) = accepting.accept(listener) {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!("ingest: connection limit reached; closing an SRT connection");
                    accepting.close(socket);
                    continue;
                };
                let peer = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                let (libsrt, context) = (accepting.clone(), context.clone());
                runtime.spawn(async move {
                    let _slot = slot;
                    serve(libsrt, socket, peer, context).await;
                });
            }
        })
        .map_err(|e| format!("cannot start the SRT thread: {e}"))?;
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
        // Unblocks the accepting thread, which then ends.
        libsrt.close(listener);
    });
    Ok(())
}

/// One accepted connection, from its key to the end of its stream.
async fn serve(libsrt: Arc<Libsrt>, socket: Socket, peer: SocketAddr, context: Arc<IngestContext>) {
    let stream_id = libsrt.stream_id(socket);
    let stream_key = stream_key_of(&stream_id).to_owned();
    let secure = match libsrt.key_state(socket) {
        KeyState::Secured => true,
        KeyState::Unsecured => false,
        state => {
            // (Only possible on channels that take insecure ingest: libsrt refuses the
            // handshake otherwise.)
            tracing::info!("ingest: SRT connection from {peer} refused: passphrase {state:?}");
            libsrt.close(socket);
            return;
        }
    };
    let begun = match context.authorize(&stream_key, secure).await {
        Ok(authorized) => publish::begin(authorized, &stream_key, secure, peer, &context).await,
        Err(refusal) => Err(refusal),
    };
    let mut publish = match begun {
        Ok(publish) => publish,
        Err(refusal) => {
            tracing::info!("ingest: SRT publish refused: {refusal:?}");
            libsrt.close(socket);
            return;
        }
    };
    let (sender, receiver) = mpsc::channel(QUEUE);
    let receiving = libsrt.clone();
    let spawned =
        std::thread::Builder::new().name("srt-receive".into()).spawn(move || receive(&receiving, socket, &sender));
    let outcome = match spawned {
        Ok(_) => stream(&mut publish, receiver).await,
        Err(error) => (Err(format!("cannot start a receiving thread: {error}")), None),
    };
    // Ends the receiving thread (its next receive fails) and the connection.
    libsrt.close(socket);
    match publish.end(outcome, &context).await {
        Ok(()) => tracing::debug!("ingest: SRT connection from {peer} closed"),
        Err(reason) => tracing::debug!("ingest: SRT connection from {peer} closed: {reason}"),
    }
}

/// The receiving thread: messages to the task until the connection ends or the task is gone.
fn receive(libsrt: &Libsrt, socket: Socket, sender: &mpsc::Sender<Result<Bytes, String>>) {
    libsrt.set_receive_timeout(socket, RECEIVE_TIMEOUT_MS);
    let mut buffer = vec![0u8; 1500];
    loop {
        let message = match libsrt.receive(socket, &mut buffer) {
            Ok(0) if sender.is_closed() => return,
            Ok(0) => continue,
            Ok(length) => Ok(Bytes::copy_from_slice(&buffer[..length])),
            Err(error) => Err(error),
        };
        let last = message.is_err();
        if sender.blocking_send(message).is_err() || last {
            return;
        }
    }
}

/// Publishes the connection's MPEG-TS until it ends; returns how it ended.
async fn stream(publish: &mut Publish, mut messages: mpsc::Receiver<Result<Bytes, String>>) -> Outcome {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let stop = publish.stop();
    let mut demuxer = TsDemuxer::new();
    let mut access_units = AccessUnits::new();
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(Ok(bytes)) => {
                    publish.received(bytes.len());
                    demuxer.push(&bytes);
                    while let Some(pes) = demuxer.next_pes() {
                        for unit in access_units.of(&pes) {
                            if let Err(code) = on_access_unit(publish, unit).await {
                                return (Err(format!("stream refused: {}", code.unwrap_or("error"))), code);
                            }
                        }
                    }
                }
                Some(Err(error)) => {
                    publish.dropped();
                    return (Err(error), None);
                }
                None => {
                    publish.dropped();
                    return (Ok(()), None);
                }
            },
            _ = stop.notified() => return (Ok(()), None),
            _ = tick.tick() => {
                if let Some(end) = publish.check().await {
                    return end;
                }
            }
        }
    }
}

/// MPEG-TS timestamps (90 kHz, unwrapped by the demuxer) in the stream's milliseconds.
fn milliseconds(ticks: u64) -> i64 {
    (ticks / 90) as i64
}

async fn on_access_unit(publish: &mut Publish, unit: AccessUnit) -> Result<(), publish::EndCode> {
    match unit {
        AccessUnit::VideoConfiguration { record } => publish.video_configuration(&record)?,
        AccessUnit::Video { pts, dts, keyframe, sample } => {
            let dts_ms = milliseconds(dts);
            // (A composition offset rounded apart from its decoding time must not go negative.)
            let pts_ms = milliseconds(pts).max(dts_ms);
            publish.frame(TrackKind::Video, dts_ms, pts_ms, keyframe, Bytes::from(sample)).await?;
        }
        AccessUnit::AudioConfiguration(config) => publish.audio_configuration(&config.to_bytes())?,
        AccessUnit::Audio { pts, frame } if publish.has_audio_configuration() => {
            let ms = milliseconds(pts);
            publish.frame(TrackKind::Audio, ms, ms, false, Bytes::from(frame)).await?;
        }
        AccessUnit::Audio { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_id_is_the_stream_key() {
        assert_eq!(stream_key_of("sk_us-west-2_abc_def"), "sk_us-west-2_abc_def");
        assert_eq!(stream_key_of("#!::r=sk_us-west-2_abc_def,m=publish"), "sk_us-west-2_abc_def");
        assert_eq!(stream_key_of("#!::m=publish"), "");
    }
}
