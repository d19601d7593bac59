//! Batched datagram I/O: `recvmmsg(2)` and `sendmmsg(2)`, non-blocking
//! (`MSG_DONTWAIT`), on any UDP socket (connected or not).
//!
//! The message headers, I/O vectors and address buffers live on the stack of each call
//! and point only into memory borrowed for that call, so no raw pointer outlives a
//! system call.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Datagrams per system call at most.
pub(crate) const MAX_BATCH: usize = 32;

/// What `recv` learned of one datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecvMeta {
    /// Bytes written into the datagram's slot.
    pub(crate) len: usize,
    /// The sender; `None` for an address family other than IPv4 and IPv6.
    pub(crate) source: Option<SocketAddr>,
    /// The datagram was longer than its slot and was cut (`MSG_TRUNC`).
    pub(crate) truncated: bool,
}

/// One datagram to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transmit<'a> {
    pub(crate) contents: &'a [u8],
    /// `None` on a connected socket.
    pub(crate) destination: Option<SocketAddr>,
}

/// Receives up to `meta.len()` datagrams (at most [`MAX_BATCH`]) with one `recvmmsg`:
/// datagram `i` into `buf[i * slot..(i + 1) * slot]`, what is known of it into
/// `meta[i]`. Returns how many arrived; `WouldBlock` when none is waiting.
pub(crate) fn recv(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    slot: usize,
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    let count = meta
        .len()
        .min(MAX_BATCH)
        .min(buf.len().checked_div(slot).unwrap_or(0));
    if count == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid value for these plain C structs (null pointers, zero
    // lengths).
    let mut names: [libc::sockaddr_storage; MAX_BATCH] = unsafe { zeroed() };
    let mut iovecs: [libc::iovec; MAX_BATCH] = unsafe { zeroed() };
    let mut headers: [libc::mmsghdr; MAX_BATCH] = unsafe { zeroed() };
    let slots = buf.chunks_exact_mut(slot).take(count);
    for (i, (chunk, name)) in slots.zip(names.iter_mut()).enumerate() {
        iovecs[i] = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: slot,
        };
        let header = &mut headers[i].msg_hdr;
        header.msg_name = (name as *mut libc::sockaddr_storage).cast();
        header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        header.msg_iov = &mut iovecs[i];
        header.msg_iovlen = 1;
    }
    // SAFETY: the first `count` headers each point at one live iovec of this frame,
    // which points at a distinct `slot`-byte chunk of `buf` (borrowed mutably for the
    // call), and at a live sockaddr_storage of this frame whose size is in
    // `msg_namelen`. The kernel writes at most those sizes and at most `count` headers.
    let received = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let received = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
    for ((m, header), name) in meta.iter_mut().zip(&headers).zip(&names).take(received) {
        *m = RecvMeta {
            len: (header.msg_len as usize).min(slot),
            source: from_sockaddr(name),
            truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    Ok(received)
}

/// Sends `transmits` (the first [`MAX_BATCH`]) with one `sendmmsg`; returns how many
/// the kernel took, in order. An error means the first one was refused.
pub(crate) fn send(socket: BorrowedFd<'_>, transmits: &[Transmit<'_>]) -> io::Result<usize> {
    let count = transmits.len().min(MAX_BATCH);
    if count == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut names: [libc::sockaddr_storage; MAX_BATCH] = unsafe { zeroed() };
    let mut iovecs: [libc::iovec; MAX_BATCH] = unsafe { zeroed() };
    let mut headers: [libc::mmsghdr; MAX_BATCH] = unsafe { zeroed() };
    for (i, (transmit, name)) in transmits.iter().zip(names.iter_mut()).enumerate() {
        iovecs[i] = libc::iovec {
            // The kernel only reads through this pointer.
            iov_base: transmit.contents.as_ptr() as *mut libc::c_void,
            iov_len: transmit.contents.len(),
        };
        let header = &mut headers[i].msg_hdr;
        if let Some(destination) = transmit.destination {
            header.msg_namelen = to_sockaddr(destination, name);
            header.msg_name = (name as *mut libc::sockaddr_storage).cast();
        }
        header.msg_iov = &mut iovecs[i];
        header.msg_iovlen = 1;
    }
    // SAFETY: the first `count` headers each point at one live iovec of this frame, which
    // points at the contents of a transmit borrowed for the call, and (with a
    // destination) at an initialized sockaddr of this frame of `msg_namelen` bytes. The
    // kernel only reads them, and writes only the headers' `msg_len`.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large
            // and aligned enough for.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which it is large
            // and aligned enough for.
            let v6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `storage`; returns its length.
fn to_sockaddr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in, and
            // every bit pattern is a valid sockaddr_in.
            let v4 = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            v4.sin_family = libc::AF_INET as libc::sa_family_t;
            v4.sin_port = a.port().to_be();
            v4.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6, and
            // every bit pattern is a valid sockaddr_in6.
            let v6 = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            v6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            v6.sin6_port = a.port().to_be();
            v6.sin6_flowinfo = a.flowinfo();
            v6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            v6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    fn pair(bind: &str) -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind(bind).unwrap();
        let b = UdpSocket::bind(bind).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (a, b)
    }

    /// Receives until `want` datagrams arrived (they may be spread over calls).
    fn recv_all(
        socket: &UdpSocket,
        buf: &mut [u8],
        slot: usize,
        want: usize,
    ) -> Vec<(Vec<u8>, RecvMeta)> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < want && std::time::Instant::now() < deadline {
            let mut meta = [RecvMeta::default(); MAX_BATCH];
            match recv(socket.as_fd(), buf, slot, &mut meta) {
                Ok(n) => {
                    for (i, m) in meta[..n].iter().enumerate() {
                        got.push((buf[i * slot..i * slot + m.len].to_vec(), *m));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn batches_round_trip_with_addresses_on_ipv4_and_ipv6() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let (a, b) = pair(bind);
            let to = b.local_addr().unwrap();
            let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
            let transmits: Vec<Transmit<'_>> = payloads
                .iter()
                .map(|p| Transmit {
                    contents: p,
                    destination: Some(to),
                })
                .collect();
            assert_eq!(send(a.as_fd(), &transmits).unwrap(), 5);
            let mut buf = vec![0u8; MAX_BATCH * 64];
            let got = recv_all(&b, &mut buf, 64, 5);
            assert_eq!(got.len(), 5);
            for ((data, meta), want) in got.iter().zip(&payloads) {
                assert_eq!(data, want);
                assert_eq!(meta.source, Some(a.local_addr().unwrap()));
                assert!(!meta.truncated);
            }
        }
    }

    #[test]
    fn long_datagrams_are_flagged_and_nothing_waiting_would_block() {
        let (a, b) = pair("127.0.0.1:0");
        let mut buf = vec![0u8; 4 * 16];
        let mut meta = [RecvMeta::default(); 4];
        let err = recv(b.as_fd(), &mut buf, 16, &mut meta).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        a.connect(b.local_addr().unwrap()).unwrap();
        // Connected: no destination needed.
        let long = [7u8; 40];
        let sent = send(
            a.as_fd(),
            &[Transmit {
                contents: &long,
                destination: None,
            }],
        )
        .unwrap();
        assert_eq!(sent, 1);
        let got = recv_all(&b, &mut buf, 16, 1);
        assert_eq!(got[0].0, [7u8; 16]);
        assert!(got[0].1.truncated);
        assert_eq!(send(a.as_fd(), &[]).unwrap(), 0);
        assert_eq!(recv(b.as_fd(), &mut buf, 0, &mut meta).unwrap(), 0);
    }
}
