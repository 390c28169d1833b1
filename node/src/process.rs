//! Starting and stopping node processes by PID. Only processes that are dermagate nodes (checked
//! through /proc) are ever signalled.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// Puts the child in its own process group so it outlives the command that started it and
/// does not receive that command's terminal signals.
pub fn detached(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0)
}

pub fn is_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie (state Z) has exited; it only waits for its parent to reap it.
    let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
    !stat.is_empty() && state != Some("Z")
}

pub fn is_dermagate(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("dermagate"))
        .unwrap_or(false)
}

pub fn terminate(pid: u32) {
    let _ = signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
}

pub fn kill(pid: u32) {
    let _ = signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}
