//! What the measured processes cost: CPU time (user + system) and resident memory, read from
//! `/proc` for the server processes named by `--pids` and for the load generator itself.

use anyhow::{Context, Result};

/// Clock ticks per second of `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time a process has used so far, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CpuTimes {
    /// In the process's own code (`utime`).
    pub(crate) user: f64,
    /// In the kernel on its behalf: its system calls (`stime`).
    pub(crate) system: f64,
}

/// CPU seconds a process has used so far (`pid` 0: this process).
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
    cpu_times(pid).map(|t| t.user + t.system)
}

/// CPU time a process has used so far, user and system apart (`pid` 0: this process).
pub(crate) fn cpu_times(pid: u32) -> Result<CpuTimes> {
    let path = if pid == 0 {
        "/proc/self/stat".to_owned()
    } else {
        format!("/proc/{pid}/stat")
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let after = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let seconds = |i: usize| -> Result<f64> {
        let ticks: f64 = fields.get(i).context("short stat")?.parse()?;
        Ok(ticks / TICKS_PER_SEC)
    };
    Ok(CpuTimes {
        user: seconds(11)?,
        system: seconds(12)?,
    })
}

/// Resident memory of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// CPU seconds of a set of processes, read together at one moment, and the servers' memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuSample {
    pub(crate) servers: f64,
    /// The part of `servers` spent in the kernel (system calls: on loopback, a send also runs
    /// the receiving client's half of TCP).
    pub(crate) servers_system: f64,
    pub(crate) redis: f64,
    pub(crate) loadgen: f64,
    /// Resident memory of the server processes together.
    pub(crate) servers_rss_kib: u64,
}

/// The processes a run measures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watched {
    pub(crate) servers: Vec<u32>,
    pub(crate) redis: Option<u32>,
}

impl Watched {
    pub(crate) fn sample(&self) -> CpuSample {
        let times: Vec<CpuTimes> = self
            .servers
            .iter()
            .map(|p| cpu_times(*p).unwrap_or_default())
            .collect();
        CpuSample {
            servers: times.iter().map(|t| t.user + t.system).sum(),
            servers_system: times.iter().map(|t| t.system).sum(),
            redis: self
                .redis
                .map(|p| cpu_seconds(p).unwrap_or(0.0))
                .unwrap_or(0.0),
            loadgen: cpu_seconds(0).unwrap_or(0.0),
            servers_rss_kib: self.servers.iter().map(|p| rss_kib(*p).unwrap_or(0)).sum(),
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        for pid in self.servers.iter().chain(self.redis.iter()) {
            cpu_seconds(*pid).with_context(|| format!("--pids/--redis-pid: no process {pid}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let before = cpu_seconds(0).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(0).unwrap() >= before);
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn user_time_grows_with_work_in_user_space() {
        let start = cpu_times(0).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut x = 0u64;
        loop {
            for i in 0..1_000_000u64 {
                x = x.wrapping_add(std::hint::black_box(i) * i);
            }
            let now = cpu_times(0).unwrap();
            if now.user > start.user {
                assert!(now.system >= start.system);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "10 s of arithmetic and no user time counted: {start:?} then {now:?}"
            );
        }
        std::hint::black_box(x);
    }
}
