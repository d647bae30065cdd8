//! The local terminal of `labctl exec -it`: raw while the command runs (keys go to the task's
//! terminal as typed, Ctrl-C included), restored however labctl ends; and its size, which the
//! task's terminal follows.

use std::io::IsTerminal;
use std::os::fd::AsRawFd;

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

/// The terminal's settings before raw mode, put back when dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on standard input, if it is a terminal (piped input stays as it is).
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

nix::ioctl_read_bad!(window_size, nix::libc::TIOCGWINSZ, nix::pty::Winsize);

/// (rows, columns) of the terminal on standard output (or input), if there is one.
pub fn size() -> Option<(u16, u16)> {
    for fd in [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()] {
        let mut ws = nix::pty::Winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own; a descriptor that is
        // not a terminal makes it fail (ENOTTY), which is handled.
        if unsafe { window_size(fd, &mut ws) }.is_ok() && ws.ws_row > 0 && ws.ws_col > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}
