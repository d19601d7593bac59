//! The crate's only `unsafe` code: thin, safe wrappers over the system calls that std,
//! tokio and socket2 do not offer.
//!
//! - [`mmsg`] (Linux): batched datagram I/O with `recvmmsg(2)`/`sendmmsg(2)`, for the
//!   STUN server and the STUN load client;
//! - [`poll_readable`] (Unix): `poll(2)` over a set of sockets, for the load client;
//! - [`raise_open_file_limit`] (Unix): `RLIMIT_NOFILE`, for the daemon and load tools;
//! - [`signal`] (Unix): `SIGTERM` or `SIGHUP` to a child process, for the tools and
//!   tests that start a daemon and stop or reload it the way systemd does.
//!
//! Each wrapper states the invariants its `unsafe` blocks rely on; callers cannot break
//! them through the safe signatures.
#![allow(unsafe_code)]

#[cfg(target_os = "linux")]
pub(crate) mod mmsg;

#[cfg(unix)]
use std::io;
#[cfg(unix)]
use std::os::fd::{AsRawFd, BorrowedFd};
#[cfg(unix)]
use std::time::Duration;

/// Waits until one of `sockets` is readable or `timeout` passes (`poll(2)`, rounded down
/// to milliseconds); returns how many are ready.
#[cfg(unix)]
pub(crate) fn poll_readable<'a>(
    sockets: impl IntoIterator<Item = BorrowedFd<'a>>,
    timeout: Duration,
) -> io::Result<usize> {
    let mut fds: Vec<libc::pollfd> = sockets
        .into_iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a live, initialized array of exactly `fds.len()` pollfd for the
    // whole call; the kernel only writes their `revents`. The descriptors are borrowed,
    // so they stay open until `poll` returns.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    usize::try_from(ready).map_err(|_| io::Error::last_os_error())
}

/// Takes the hard `RLIMIT_NOFILE` as the soft one; returns the soft limit now in force.
#[cfg(unix)]
pub fn raise_open_file_limit() -> io::Result<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live, writable rlimit for the whole call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur == limit.rlim_max {
        return Ok(limit.rlim_cur);
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a live, initialized rlimit; the kernel only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Instant;

    #[test]
    fn open_file_limit_is_raised_to_the_hard_limit() {
        let soft = raise_open_file_limit().expect("getrlimit/setrlimit");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise_open_file_limit`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, soft);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        // A second call finds nothing to do.
        assert_eq!(raise_open_file_limit().unwrap(), soft);
    }

    #[test]
    fn poll_reports_a_readable_socket_and_times_out_otherwise() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        assert_eq!(
            poll_readable([a.as_fd(), b.as_fd()], Duration::from_millis(20)).unwrap(),
            0
        );
        assert!(started.elapsed() >= Duration::from_millis(15));
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        assert_eq!(
            poll_readable([a.as_fd(), b.as_fd()], Duration::from_secs(5)).unwrap(),
            1
        );
        assert_eq!(poll_readable([], Duration::ZERO).unwrap(), 0);
    }
}

/// A signal the tools and tests send to a daemon they started.
#[cfg(unix)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `SIGTERM`: shut down gracefully.
    Terminate,
    /// `SIGHUP`: reload certificates and token files.
    Reload,
}

/// Sends `signal` to process `pid` (`kill(2)`). The caller must own `pid`: a child it
/// spawned and has not yet reaped.
#[cfg(unix)]
pub fn signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    let number = match signal {
        Signal::Terminate => libc::SIGTERM,
        Signal::Reload => libc::SIGHUP,
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, number) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
