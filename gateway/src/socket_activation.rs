//! Listening sockets handed over by whoever starts the gateway, systemd's way: file
//! descriptors 3, 4, … and `LISTEN_FDS` (how many), with `LISTEN_PID`, when set, naming this
//! process. Each socket serves the configured listener (or the admin address) it is bound to,
//! so a supervisor can hold the ports across restarts, bind privileged ports for an
//! unprivileged gateway, and a test can bind port 0 itself and never race another test for
//! a port. Pingora takes the sockets from its listen-fd table, as in a graceful upgrade.

use pingora::server::ListenFds;
use socket2::Socket;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// The first handed-over descriptor (after standard input, output and error).
const FIRST_FD: RawFd = 3;

/// Puts each handed-over socket into `table` under the configured address it is bound to.
/// A socket that matches no address in `wanted` is closed, with a warning.
pub fn hand_over(wanted: &[&str], table: &ListenFds) {
    let Some(count) = handed_over_count() else {
        return;
    };
    for fd in FIRST_FD..FIRST_FD.saturating_add(count) {
        if !is_listening_socket(fd) {
            tracing::warn!(
                fd,
                "LISTEN_FDS names a descriptor that is not a listening socket; ignored"
            );
            continue;
        }
        // SAFETY: the descriptor was handed to this process for it to own (LISTEN_FDS), it
        // is open (checked above), and nothing else in the process has taken it: this runs
        // once, at start-up.
        let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        let address = local.and_then(|bound| {
            wanted
                .iter()
                .find(|w| w.parse::<SocketAddr>().ok() == Some(bound))
        });
        let Some(address) = address else {
            tracing::warn!(fd, bound = ?local, "a handed-over socket matches no listener; closed");
            continue;
        };
        if let Err(e) = socket.set_nonblocking(true).and(socket.set_cloexec(true)) {
            tracing::warn!(fd, error = %e, "cannot prepare a handed-over socket; closed");
            continue;
        }
        tracing::info!(fd, address, "serving a handed-over socket");
        table.lock().add(address.to_string(), socket.into_raw_fd());
    }
}

/// `LISTEN_FDS`, when the variables are there and meant for this process.
fn handed_over_count() -> Option<RawFd> {
    let count = std::env::var("LISTEN_FDS").ok()?.parse::<RawFd>().ok()?;
    match std::env::var("LISTEN_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => (count > 0).then_some(count),
    }
}

fn is_listening_socket(fd: RawFd) -> bool {
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `listening`; an fd that is not a
    // socket (or not open) makes it fail, which answers false.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0 && listening != 0
}
