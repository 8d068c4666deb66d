//! What the server process costs, read from `/proc/<pid>` (Linux): resident
//! memory and CPU time. Read-only, no privileges needed for a child process.

use std::time::Instant;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// When it was read.
    pub at: Instant,
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// User + system CPU time so far, seconds.
    pub cpu_s: f64,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ): 100 on every
/// Linux this runs on; `getconf CLK_TCK` would need a child process.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads `pid`'s memory and CPU; `None` if the process is gone or unreadable.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(ProcSample {
        at: Instant::now(),
        rss_kib,
        cpu_s: (utime + stime) / TICKS_PER_SECOND,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_sampled() {
        let first = sample(std::process::id()).expect("readable");
        assert!(first.rss_kib > 0);
        // Burn a little CPU; the clock only moves forward.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let second = sample(std::process::id()).unwrap();
        assert!(second.cpu_s >= first.cpu_s);
    }

    #[test]
    fn a_missing_process_is_none() {
        assert!(sample(u32::MAX).is_none());
    }
}
