//! Kernel receive timestamps, switched on and proven in force before the first tap opens.
//!
//! Linux turns its receive timestamps on for the first socket that asks through deferred work;
//! until that work runs, a packet socket's frame is stamped when it is *read*, not when it
//! arrived. A tap opened in that window that reads late can show a request and its reply, read
//! together, microseconds apart though 100 ms lay between them (one possible cause of the
//! undelayed reply the capture test once saw). Measured on this machine under load: the first
//! datagram after asking was stamped at its read 2 times in 20.
//!
//! [`Timestamps::on`] asks, then sends itself datagrams over loopback until one is stamped on
//! arrival (its stamp well before its read). It is kept for the whole capture, so the kernel's
//! switch stays on whatever the taps do.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{self, MsgFlags, SockaddrIn};

use super::CaptureError;

/// How long a probe datagram waits before it is read: a stamp this much older than the read
/// was taken on arrival.
const WAIT: Duration = Duration::from_millis(5);
/// How long to keep proving before going on without (and saying so).
const GIVE_UP: Duration = Duration::from_secs(2);

/// Holds the kernel's receive timestamps on while it lives.
pub struct Timestamps {
    _socket: UdpSocket,
    /// Whether a datagram was seen stamped on arrival before [`GIVE_UP`].
    pub confirmed: bool,
}

impl Timestamps {
    pub fn on() -> Result<Timestamps, CaptureError> {
        let io = |e: std::io::Error| CaptureError::Socket(format!("timestamp probe: {e}"));
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
        socket::setsockopt(&socket, socket::sockopt::ReceiveTimestampns, &true).map_err(|e| CaptureError::Socket(e.to_string()))?;
        let to: SocketAddr = socket.local_addr().map_err(io)?;
        let started = Instant::now();
        let mut confirmed = false;
        while !confirmed && started.elapsed() < GIVE_UP {
            socket.send_to(b"t", to).map_err(io)?;
            std::thread::sleep(WAIT);
            let stamp = stamp_of_next(&socket).map_err(io)?;
            let read = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            confirmed = stamp.is_some_and(|stamp| read.saturating_sub(stamp) >= WAIT * 4 / 5);
        }
        Ok(Timestamps { _socket: socket, confirmed })
    }
}

/// The kernel's stamp of the next datagram on `socket`.
fn stamp_of_next(socket: &UdpSocket) -> std::io::Result<Option<Duration>> {
    let mut buffer = [0u8; 8];
    let mut iov = [std::io::IoSliceMut::new(&mut buffer)];
    let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let message = socket::recvmsg::<SockaddrIn>(socket.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::empty()).map_err(std::io::Error::from)?;
    Ok(message.cmsgs().ok().and_then(super::socket::kernel_stamp))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kernel_stamps_on_arrival_once_asked_and_proven() {
        let on = super::Timestamps::on().expect("a loopback UDP socket");
        assert!(on.confirmed, "no datagram stamped on arrival within 2 s of asking");
    }
}
