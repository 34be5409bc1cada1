//! CPU accounting of the bench and the nodes in the measured window (Linux /proc; `None`
//! elsewhere).

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::report::CpuReport;

/// `/proc` reports CPU time in USER_HZ ticks, which the kernel ABI fixes at 100 per second.
pub(super) const PROC_TICKS_PER_SECOND: f64 = 100.0;

// ---------------------------------------------------------------------------------------------
// CPU accounting (Linux /proc; `None` elsewhere).

/// CPU seconds this process has used (user + system, all threads).
pub(super) fn process_cpu_seconds() -> Option<f64> {
    pid_cpu_seconds("self")
}

/// CPU seconds process `pid` (a number, or `self`) has used, from `/proc/<pid>/stat`.
pub(super) fn pid_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; the slice starts at field 3.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / PROC_TICKS_PER_SECOND)
}

/// (busy, total) ticks of the whole machine since boot, from the `cpu` line of /proc/stat.
pub(super) fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|value| value.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

/// The pids in the `node*.pid` files of `dir` (as `scripts/cluster.sh` writes them).
pub(super) fn node_pids(dir: &std::path::Path) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let node = name.strip_prefix("node")?.strip_suffix(".pid")?.to_owned();
            let pid = std::fs::read_to_string(entry.path())
                .ok()?
                .trim()
                .to_owned();
            pid.bytes()
                .all(|b| b.is_ascii_digit())
                .then_some((node, pid))
        })
        .collect()
}

#[derive(Clone)]
pub(super) struct CpuSample {
    pub(super) at: Instant,
    pub(super) process_s: Option<f64>,
    pub(super) machine: Option<(u64, u64)>,
    /// Node → (pid, CPU seconds) for the `--pid-dir` nodes.
    pub(super) nodes: BTreeMap<String, (String, f64)>,
}

impl CpuSample {
    pub(super) fn take(pid_dir: Option<&std::path::Path>) -> Self {
        let nodes = pid_dir
            .map(node_pids)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(node, pid)| {
                let seconds = pid_cpu_seconds(&pid)?;
                Some((node, (pid, seconds)))
            })
            .collect();
        Self {
            at: Instant::now(),
            process_s: process_cpu_seconds(),
            machine: machine_cpu_ticks(),
            nodes,
        }
    }

    /// CPU cores used by each node process that ran (with the same pid) through the window.
    pub(super) fn nodes_since(&self, start: &CpuSample, wall_s: f64) -> BTreeMap<String, f64> {
        self.nodes
            .iter()
            .filter_map(|(node, (pid, after))| {
                let (pid_before, before) = start.nodes.get(node)?;
                (pid_before == pid && wall_s > 0.0)
                    .then(|| (node.clone(), (after - before) / wall_s))
            })
            .collect()
    }

    pub(super) fn report_since(self, start: &CpuSample) -> CpuReport {
        let wall_s = self.at.saturating_duration_since(start.at).as_secs_f64();
        let machine_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let bench_cores = match (start.process_s, self.process_s) {
            (Some(before), Some(after)) if wall_s > 0.0 => Some((after - before) / wall_s),
            _ => None,
        };
        let machine_busy_cores = match (start.machine, self.machine) {
            (Some((busy_0, total_0)), Some((busy_1, total_1))) if total_1 > total_0 => Some(
                (busy_1.saturating_sub(busy_0)) as f64 / (total_1 - total_0) as f64
                    * machine_cpus as f64,
            ),
            _ => None,
        };
        CpuReport {
            bench_cores,
            machine_busy_cores,
            machine_cpus,
            nodes_cores: self.nodes_since(start, wall_s),
        }
    }
}
