//! libsrt, the reference SRT implementation (Haivision; what ffmpeg, OBS and hardware encoders
//! speak), loaded at run time from the system (Debian: `libsrt1.5-gnutls`, which ffmpeg already
//! depends on). Loading it rather than linking keeps the server binary free of a build-time C
//! dependency: without the library the server runs with SRT off and says so.
//!
//! Only what a listener that receives needs is bound here, as safe methods; socket handles are
//! libsrt's integers.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::net::SocketAddr;

use libloading::Library;

pub type Socket = c_int;
pub const INVALID_SOCKET: Socket = -1;
const ERROR: c_int = -1;
/// Error codes (srt.h `SRT_ERRNO`) of a receive that found nothing in time.
const SRT_EASYNCRCV: c_int = 6002;
const SRT_ETIMEOUT: c_int = 6003;

/// Socket options (srt.h `SRT_SOCKOPT`).
const SRTO_RCVTIMEO: c_int = 14;
const SRTO_PASSPHRASE: c_int = 26;
const SRTO_KMSTATE: c_int = 28;
const SRTO_RCVLATENCY: c_int = 43;
const SRTO_STREAMID: c_int = 46;
const SRTO_ENFORCEDENCRYPTION: c_int = 53;

/// libsrt's log levels are syslog's: only critical problems reach stderr (its error lines can
/// name a stream id, which is a stream key).
const LOG_CRIT: c_int = 2;

/// The encryption state of a connection (srt.h `SRT_KM_STATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Unsecured,
    Securing,
    Secured,
    NoSecret,
    BadSecret,
    Unknown,
}

/// Why a handshake is refused, as the caller sees it (srt.h `SRT_REJX_*`, HTTP-like codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum RejectReason {
    BadRequest = 1400,
    Unauthorized = 1401,
    Forbidden = 1403,
    Conflict = 1409,
    Unavailable = 1503,
}

type ListenCallbackFn = unsafe extern "C" fn(*mut c_void, Socket, c_int, *const c_void, *const c_char) -> c_int;

/// The library's entry points. The function pointers stay valid as long as `_library` lives.
pub struct Libsrt {
    startup: unsafe extern "C" fn() -> c_int,
    setloglevel: unsafe extern "C" fn(c_int),
    create_socket: unsafe extern "C" fn() -> Socket,
    bind: unsafe extern "C" fn(Socket, *const c_void, c_int) -> c_int,
    getsockname: unsafe extern "C" fn(Socket, *mut c_void, *mut c_int) -> c_int,
    listen: unsafe extern "C" fn(Socket, c_int) -> c_int,
    listen_callback: unsafe extern "C" fn(Socket, ListenCallbackFn, *mut c_void) -> c_int,
    accept: unsafe extern "C" fn(Socket, *mut c_void, *mut c_int) -> Socket,
    close: unsafe extern "C" fn(Socket) -> c_int,
    setsockflag: unsafe extern "C" fn(Socket, c_int, *const c_void, c_int) -> c_int,
    getsockflag: unsafe extern "C" fn(Socket, c_int, *mut c_void, *mut c_int) -> c_int,
    recvmsg: unsafe extern "C" fn(Socket, *mut c_char, c_int) -> c_int,
    getlasterror_str: unsafe extern "C" fn() -> *const c_char,
    getlasterror: unsafe extern "C" fn(*mut c_int) -> c_int,
    setrejectreason: unsafe extern "C" fn(Socket, c_int) -> c_int,
    _library: Library,
}

/// Where libsrt is looked for: Debian's flavours, then the generic names.
const LIBRARY_NAMES: [&str; 7] = [
    "libsrt-gnutls.so.1.5",
    "libsrt-openssl.so.1.5",
    "libsrt.so.1.5",
    "libsrt-gnutls.so",
    "libsrt-openssl.so",
    "libsrt.so",
    "libsrt.dylib",
];

impl Libsrt {
    /// Loads libsrt (`path`, or the usual names) and starts it.
    pub fn load(path: Option<&str>) -> Result<Libsrt, String> {
        let names: Vec<&str> = match path {
            Some(path) => vec![path],
            None => LIBRARY_NAMES.to_vec(),
        };
        let mut failures = Vec::new();
        for name in names {
            // SAFETY: loading libsrt runs its initialisers, which only set up its own state.
            match unsafe { Library::new(name) } {
                Ok(library) => return Libsrt::bind_symbols(library),
                Err(error) => failures.push(format!("{name}: {error}")),
            }
        }
        Err(format!("libsrt not found ({})", failures.join("; ")))
    }

    fn bind_symbols(library: Library) -> Result<Libsrt, String> {
        macro_rules! symbol {
            ($name:literal) => {
                // SAFETY: the types match srt.h's declarations of these functions (libsrt 1.4+).
                *unsafe { library.get($name) }.map_err(|e| format!("libsrt lacks a function: {e}"))?
            };
        }
        let libsrt = Libsrt {
            startup: symbol!(b"srt_startup\0"),
            setloglevel: symbol!(b"srt_setloglevel\0"),
            create_socket: symbol!(b"srt_create_socket\0"),
            bind: symbol!(b"srt_bind\0"),
            getsockname: symbol!(b"srt_getsockname\0"),
            listen: symbol!(b"srt_listen\0"),
            listen_callback: symbol!(b"srt_listen_callback\0"),
            accept: symbol!(b"srt_accept\0"),
            close: symbol!(b"srt_close\0"),
            setsockflag: symbol!(b"srt_setsockflag\0"),
            getsockflag: symbol!(b"srt_getsockflag\0"),
            recvmsg: symbol!(b"srt_recvmsg\0"),
            getlasterror_str: symbol!(b"srt_getlasterror_str\0"),
            getlasterror: symbol!(b"srt_getlasterror\0"),
            setrejectreason: symbol!(b"srt_setrejectreason\0"),
            _library: library,
        };
        // SAFETY: plain calls without arguments that could be invalid.
        unsafe {
            if (libsrt.startup)() < 0 {
                return Err(format!("srt_startup failed: {}", libsrt.last_error()));
            }
            (libsrt.setloglevel)(LOG_CRIT);
        }
        Ok(libsrt)
    }

    /// The calling thread's last libsrt error.
    pub fn last_error(&self) -> String {
        // SAFETY: libsrt returns a thread-local NUL-terminated string (never null).
        unsafe {
            let message = (self.getlasterror_str)();
            if message.is_null() {
                String::from("unknown error")
            } else {
                CStr::from_ptr(message).to_string_lossy().into_owned()
            }
        }
    }

    /// A socket bound to `addr` (port 0: any free port), with `latency_ms` of receive latency
    /// (the window in which lost packets are retransmitted); the address it is bound to.
    pub fn bind(&self, addr: SocketAddr, latency_ms: u32) -> Result<(Socket, SocketAddr), String> {
        // SAFETY: every pointer handed over points at a live local of the size given.
        unsafe {
            let socket = (self.create_socket)();
            if socket == INVALID_SOCKET {
                return Err(format!("srt_create_socket: {}", self.last_error()));
            }
            let fail = |what: &str| {
                let error = format!("{what}: {}", self.last_error());
                (self.close)(socket);
                Err(error)
            };
            if !self.set_int(socket, SRTO_RCVLATENCY, latency_ms as c_int) {
                return fail("SRTO_RCVLATENCY");
            }
            let (address, length) = socket_address(addr);
            if (self.bind)(socket, (&address as *const libc::sockaddr_storage).cast(), length) == ERROR {
                return fail("srt_bind");
            }
            let mut bound: libc::sockaddr_storage = std::mem::zeroed();
            let mut length = size_of::<libc::sockaddr_storage>() as c_int;
            if (self.getsockname)(socket, (&mut bound as *mut libc::sockaddr_storage).cast(), &mut length) == ERROR {
                return fail("srt_getsockname");
            }
            match parse_socket_address(&bound) {
                Some(bound) => Ok((socket, bound)),
                None => fail("srt_getsockname"),
            }
        }
    }

    /// Starts listening on a bound socket, calling `callback(opaque, …)` on every handshake.
    ///
    /// # Safety
    /// `opaque` must stay valid, and `callback` callable from libsrt's threads, until the socket
    /// is closed.
    pub unsafe fn listen(&self, socket: Socket, callback: ListenCallbackFn, opaque: *mut c_void) -> Result<(), String> {
        // SAFETY: the caller vouches for `callback` and `opaque`.
        unsafe {
            if (self.listen_callback)(socket, callback, opaque) == ERROR {
                return Err(format!("srt_listen_callback: {}", self.last_error()));
            }
            if (self.listen)(socket, 128) == ERROR {
                return Err(format!("srt_listen: {}", self.last_error()));
            }
        }
        Ok(())
    }

    /// Waits for the next connection; `None` when the listener was closed or failed.
    pub fn accept(&self, listener: Socket) -> Option<(Socket, Option<SocketAddr>)> {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut length = size_of::<libc::sockaddr_storage>() as c_int;
        // SAFETY: `storage` is large enough for any sockaddr, and `length` says so.
        let socket =
            unsafe { (self.accept)(listener, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut length) };
        if socket == INVALID_SOCKET {
            return None;
        }
        Some((socket, parse_socket_address(&storage)))
    }

    pub fn close(&self, socket: Socket) {
        // SAFETY: closing an already closed socket is an error libsrt reports, nothing worse.
        unsafe {
            (self.close)(socket);
        }
    }

    /// Sets the passphrase a handshake must match (10 to 79 bytes).
    pub fn set_passphrase(&self, socket: Socket, passphrase: &str) -> bool {
        // SAFETY: the pointer and length describe `passphrase`.
        unsafe {
            (self.setsockflag)(socket, SRTO_PASSPHRASE, passphrase.as_ptr().cast(), passphrase.len() as c_int) != ERROR
        }
    }

    /// Whether a caller without the passphrase is refused (libsrt's default) or let in
    /// unencrypted.
    pub fn set_enforced_encryption(&self, socket: Socket, enforced: bool) -> bool {
        self.set_int(socket, SRTO_ENFORCEDENCRYPTION, c_int::from(enforced))
    }

    /// How long a receive waits before it gives up (and the caller looks around).
    pub fn set_receive_timeout(&self, socket: Socket, milliseconds: i32) -> bool {
        self.set_int(socket, SRTO_RCVTIMEO, milliseconds)
    }

    fn set_int(&self, socket: Socket, option: c_int, value: c_int) -> bool {
        // SAFETY: the option takes an int, which `value` is.
        unsafe {
            (self.setsockflag)(socket, option, (&value as *const c_int).cast(), size_of::<c_int>() as c_int) != ERROR
        }
    }

    /// The stream id the caller sent (empty when none).
    pub fn stream_id(&self, socket: Socket) -> String {
        let mut buffer = [0u8; 513];
        let mut length = (buffer.len() - 1) as c_int;
        // SAFETY: `buffer` holds `length` bytes.
        let result = unsafe { (self.getsockflag)(socket, SRTO_STREAMID, buffer.as_mut_ptr().cast(), &mut length) };
        if result == ERROR {
            return String::new();
        }
        String::from_utf8_lossy(&buffer[..(length.max(0) as usize).min(buffer.len() - 1)]).into_owned()
    }

    pub fn key_state(&self, socket: Socket) -> KeyState {
        let mut value: c_int = -1;
        let mut length = size_of::<c_int>() as c_int;
        // SAFETY: the option gives an int.
        unsafe { (self.getsockflag)(socket, SRTO_KMSTATE, (&mut value as *mut c_int).cast(), &mut length) };
        match value {
            0 => KeyState::Unsecured,
            1 => KeyState::Securing,
            2 => KeyState::Secured,
            3 => KeyState::NoSecret,
            4 => KeyState::BadSecret,
            _ => KeyState::Unknown,
        }
    }

    /// Refuses a handshake with this reason (in the listen callback, before returning -1).
    pub fn reject(&self, socket: Socket, reason: RejectReason) {
        // SAFETY: a plain call on a socket handle.
        unsafe {
            (self.setrejectreason)(socket, reason as c_int);
        }
    }

    /// One message (in live mode, one UDP payload: up to 1456 bytes, 7 TS packets with
    /// ffmpeg) into `buffer`. `Ok(0)`: the receive timeout passed; `Err`: the connection is
    /// over.
    pub fn receive(&self, socket: Socket, buffer: &mut [u8]) -> Result<usize, String> {
        // SAFETY: `buffer` holds the length given.
        let received = unsafe { (self.recvmsg)(socket, buffer.as_mut_ptr().cast(), buffer.len() as c_int) };
        if received >= 0 {
            return Ok(received as usize);
        }
        // SAFETY: a null errno pointer is allowed.
        let code = unsafe { (self.getlasterror)(std::ptr::null_mut()) };
        // SRT_EASYNCRCV or SRT_ETIMEOUT: nothing arrived in time.
        if code == SRT_EASYNCRCV || code == SRT_ETIMEOUT {
            return Ok(0);
        }
        Err(self.last_error())
    }
}

/// A `sockaddr_in` or `sockaddr_in6` for `addr`, and its length.
fn socket_address(addr: SocketAddr) -> (libc::sockaddr_storage, c_int) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let length = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_flowinfo = v6.flowinfo().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            sin6.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, length as c_int)
}

fn parse_socket_address(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((sin.sin_addr.s_addr.to_ne_bytes(), u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::from((sin6.sin6_addr.s6_addr, u16::from_be(sin6.sin6_port))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip() {
        for addr in ["127.0.0.1:9000", "[::1]:9000", "0.0.0.0:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let (storage, _) = socket_address(addr);
            assert_eq!(parse_socket_address(&storage), Some(addr));
        }
    }
}
