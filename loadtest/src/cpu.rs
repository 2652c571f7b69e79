//! CPU time of this process and of a server process (with its descendants), from the kernel, so
//! a report can show whether the load generator itself was a bottleneck.

/// User + system CPU seconds of this process (all threads).
pub fn own_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and has no other effect.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (utime + stime in ticks, parent pid) from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(u64, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime, ppid))
}

/// CPU seconds of `pid` and every live descendant, or `None` when it does not exist.
pub fn process_tree_seconds(pid: u32) -> Option<f64> {
    let (own, _) = stat(pid)?;
    let mut all: Vec<(u32, u64, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                && let Some((ticks, ppid)) = stat(p)
            {
                all.push((p, ticks, ppid));
            }
        }
    }
    let mut total = own;
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, ticks, ppid) in &all {
            if ppid == parent && p != pid {
                total += ticks;
                frontier.push(p);
            }
        }
    }
    Some(total as f64 / ticks_per_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_this_process() {
        let before = own_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(own_seconds() >= before);
        assert!(process_tree_seconds(std::process::id()).is_some());
        assert!(process_tree_seconds(u32::MAX).is_none());
    }
}
