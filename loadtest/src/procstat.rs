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

/// How long each thread of a process has run on a CPU, to the nanosecond
/// (`/proc/<pid>/task/*/schedstat`): exact where `/proc/<pid>/stat` counts in
/// ticks of 10 ms, too coarse for a burst of a fraction of a second.
#[derive(Debug, Clone, Default)]
pub struct ThreadTimes(std::collections::HashMap<u32, u64>);

impl ThreadTimes {
    /// `pid`'s threads now; `None` if unreadable (a kernel without sched info).
    pub fn read(pid: u32) -> Option<ThreadTimes> {
        let mut times = std::collections::HashMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let task = task.ok()?;
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread that ended between the listing and the read: skip it.
            let Ok(line) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            times.insert(tid, line.split_whitespace().next()?.parse().ok()?);
        }
        Some(ThreadTimes(times))
    }

    /// CPU time spent since `earlier`, ns: each thread's growth, and all of a
    /// thread's time if it started since. A thread that ended since took its
    /// time with it (an idle pool thread, for a server under load): counting
    /// by thread keeps its earlier lifetime from being subtracted.
    pub fn since(&self, earlier: &ThreadTimes) -> u64 {
        self.0
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0)))
            .sum()
    }
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
        assert!(ThreadTimes::read(u32::MAX).is_none());
    }

    #[test]
    fn thread_times_count_a_new_thread() {
        let pid = std::process::id();
        let first = ThreadTimes::read(pid).expect("schedstat readable");
        // A new thread spins for 30 ms of wall time, says so, and stays alive
        // until read.
        let (spun_tx, spun_rx) = std::sync::mpsc::channel::<u64>();
        let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let began = std::time::Instant::now();
            let mut x = 0u64;
            while began.elapsed() < std::time::Duration::from_millis(30) {
                x = x.wrapping_mul(31).wrapping_add(1);
            }
            spun_tx.send(x).ok();
            read_rx.recv().ok();
        });
        assert!(spun_rx.recv().unwrap() != 1);
        let second = ThreadTimes::read(pid).expect("readable");
        read_tx.send(()).ok();
        other.join().unwrap();
        // A busy machine gives the thread less CPU than its 30 ms of wall
        // time, never more: only a bound well under it is certain.
        let spent = second.since(&first);
        assert!(
            spent >= 5_000_000,
            "{spent} ns counted for 30 ms of spinning"
        );
        assert_eq!(first.since(&first), 0);
    }
}
