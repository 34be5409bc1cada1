//! The arithmetic of a benchmark run: latency summaries from HDR histograms, exact per-second
//! throughput and p99 from the request log, medians, and the failover windows after each leader
//! kill.
//!
//! Pure on purpose: no I/O, no clock. Every time arrives as microseconds since the run started,
//! so the unit tests below can feed hand-made timelines.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram records; longer ones are clamped to it. The client gives up on a
/// request long before (its retry deadline is seconds), so nothing real is clamped.
pub const LATENCY_US_MAX: u64 = 600_000_000;
/// HDR precision: values are kept to 3 significant digits (0.1% error).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
const MICROS_PER_SECOND: u64 = 1_000_000;

/// An empty latency histogram in microseconds, 1 µs ..= `LATENCY_US_MAX`.
pub fn latency_histogram() -> Histogram<u64> {
    // Cannot fail: the bounds are constants with low >= 1, high >= 2 * low and sigfig <= 5,
    // which is all `new_with_bounds` checks.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Records one latency, clamped into the histogram's range.
pub fn latency_record(histogram: &mut Histogram<u64>, latency_us: u64, count: u64) {
    if count == 0 {
        return;
    }
    let value = latency_us.clamp(1, LATENCY_US_MAX);
    // In range by the clamp above, so `record_n` cannot fail; saturating keeps it total anyway.
    histogram.saturating_record_n(value, count);
}

/// One finished request, as the client task saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestEvent {
    /// When the answer (or the final failure) arrived, µs since the run started.
    pub done_us: u64,
    pub latency_us: u64,
    /// Transfers of this request acknowledged with 201/200.
    pub transfers_acked: u32,
    /// Transfers of this request that ended in an error (4xx, no definite answer, bad body).
    pub transfers_failed: u32,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl LatencySummary {
    /// The summary of a histogram in µs; all zero when it is empty.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// The nearest-rank percentile of sorted values, `per_mille` in 1..=1000 (990 = p99).
/// `None` for no values.
pub fn percentile_sorted(sorted: &[u64], per_mille: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    assert!((1..=1000).contains(&per_mille), "per_mille {per_mille}");
    let n = sorted.len() as u64;
    // rank = ceil(n * q), 1-based.
    let rank = (n * per_mille).div_ceil(1000).max(1);
    let index = usize::try_from(rank - 1).unwrap_or(usize::MAX);
    sorted.get(index).or(sorted.last()).copied()
}

/// The median of `values` (mean of the two middle ones for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        Some(sorted[middle])
    } else {
        Some((sorted[middle - 1] + sorted[middle]) / 2.0)
    }
}

/// Throughput and tail latency of one second of the measured window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondStats {
    /// Seconds since the measured window began (this second is `[second, second + 1)`).
    pub second: u64,
    /// Transfers acknowledged by answers that arrived in this second.
    pub transfers: u64,
    /// Requests answered (or given up on) in this second.
    pub requests: u64,
    /// Transfers that ended in an error in this second.
    pub errors: u64,
    /// p99 latency of the requests that finished in this second; `None` when none did.
    pub p99_ms: Option<f64>,
}

/// Buckets the requests that finished in `[window_start_us, window_start_us + seconds)` by
/// second; p99 is exact (nearest rank) over each second's requests.
pub fn per_second(events: &[RequestEvent], window_start_us: u64, seconds: u64) -> Vec<SecondStats> {
    let n_seconds = usize::try_from(seconds).unwrap_or(0);
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); n_seconds];
    let mut stats: Vec<SecondStats> = (0..seconds)
        .map(|second| SecondStats {
            second,
            transfers: 0,
            requests: 0,
            errors: 0,
            p99_ms: None,
        })
        .collect();
    for event in events {
        let Some(since_start) = event.done_us.checked_sub(window_start_us) else {
            continue;
        };
        let Ok(index) = usize::try_from(since_start / MICROS_PER_SECOND) else {
            continue;
        };
        let Some(second) = stats.get_mut(index) else {
            continue;
        };
        second.transfers += u64::from(event.transfers_acked);
        second.errors += u64::from(event.transfers_failed);
        second.requests += 1;
        latencies[index].push(event.latency_us);
    }
    for (second, mut latencies) in stats.iter_mut().zip(latencies) {
        latencies.sort_unstable();
        second.p99_ms = percentile_sorted(&latencies, 990).map(ms);
    }
    stats
}

/// When a leader kill command ran, µs since the run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillTimes {
    /// The kill command was started (it looks the leader up, then sends SIGKILL).
    pub started_us: u64,
    /// The kill command returned: the leader's process is gone.
    pub done_us: u64,
}

/// What the clients saw after one leader kill.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KillWindow {
    /// From the kill command's return (leader surely dead) to the next acknowledged transfer.
    /// When no transfer was acknowledged before the next kill (or the end of the window), this
    /// is the time up to that point and `censored` is set.
    pub to_next_ack_ms: f64,
    /// The longest stretch without any acknowledged transfer from the kill command's start to
    /// the next kill (or the end): the outage as clients felt it, independent of when exactly
    /// the signal landed inside the command.
    pub longest_gap_ms: f64,
    pub censored: bool,
}

/// The failover windows of each kill. `ack_times_us` must be sorted: the completion times of
/// requests that acknowledged at least one transfer.
pub fn kill_windows(ack_times_us: &[u64], kills: &[KillTimes], run_end_us: u64) -> Vec<KillWindow> {
    assert!(
        ack_times_us.windows(2).all(|pair| pair[0] <= pair[1]),
        "ack times must be sorted"
    );
    kills
        .iter()
        .enumerate()
        .map(|(index, kill)| {
            let limit_us = kills
                .get(index + 1)
                .map_or(run_end_us, |next| next.started_us)
                .max(kill.done_us);
            kill_window(ack_times_us, kill, limit_us)
        })
        .collect()
}

fn kill_window(ack_times_us: &[u64], kill: &KillTimes, limit_us: u64) -> KillWindow {
    let after_done = ack_times_us.partition_point(|&at| at <= kill.done_us);
    let (to_next_ack_us, censored) = match ack_times_us.get(after_done) {
        Some(&at) if at <= limit_us => (at - kill.done_us, false),
        _ => (limit_us - kill.done_us, true),
    };
    // Start from the last acknowledgement at or before the kill began (or the kill's start).
    let after_start = ack_times_us.partition_point(|&at| at <= kill.started_us);
    let mut previous_us = match after_start {
        0 => kill.started_us,
        n => ack_times_us[n - 1],
    };
    let mut longest_gap_us = 0;
    for &at in ack_times_us[after_start..]
        .iter()
        .take_while(|&&at| at <= limit_us)
    {
        longest_gap_us = longest_gap_us.max(at - previous_us);
        previous_us = at;
    }
    longest_gap_us = longest_gap_us.max(limit_us.saturating_sub(previous_us));
    KillWindow {
        to_next_ack_ms: ms(to_next_ack_us),
        longest_gap_ms: ms(longest_gap_us),
        censored,
    }
}

/// Median and maximum of the kill windows over all kills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FailoverSummary {
    pub kills: usize,
    pub to_next_ack_ms_median: f64,
    pub to_next_ack_ms_max: f64,
    pub longest_gap_ms_median: f64,
    pub longest_gap_ms_max: f64,
    /// Kills after which no transfer was acknowledged before the next kill or the end.
    pub censored: usize,
}

impl FailoverSummary {
    pub fn from_windows(windows: &[KillWindow]) -> Self {
        let to_next: Vec<f64> = windows.iter().map(|w| w.to_next_ack_ms).collect();
        let gaps: Vec<f64> = windows.iter().map(|w| w.longest_gap_ms).collect();
        let max = |values: &[f64]| values.iter().copied().fold(0.0, f64::max);
        Self {
            kills: windows.len(),
            to_next_ack_ms_median: median(&to_next).unwrap_or(0.0),
            to_next_ack_ms_max: max(&to_next),
            longest_gap_ms_median: median(&gaps).unwrap_or(0.0),
            longest_gap_ms_max: max(&gaps),
            censored: windows.iter().filter(|w| w.censored).count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(done_us: u64, latency_us: u64, acked: u32, failed: u32) -> RequestEvent {
        RequestEvent {
            done_us,
            latency_us,
            transfers_acked: acked,
            transfers_failed: failed,
        }
    }

    #[test]
    fn histogram_summary_reports_percentiles_in_milliseconds() {
        let mut histogram = latency_histogram();
        // 1..=1000 ms, once each.
        for value_ms in 1..=1000_u64 {
            latency_record(&mut histogram, value_ms * 1000, 1);
        }
        let summary = LatencySummary::from_histogram(&histogram);
        assert_eq!(summary.count, 1000);
        let close = |actual: f64, expected: f64| (actual - expected).abs() <= expected * 0.002;
        assert!(close(summary.p50_ms, 500.0), "{summary:?}");
        assert!(close(summary.p90_ms, 900.0), "{summary:?}");
        assert!(close(summary.p99_ms, 990.0), "{summary:?}");
        assert!(close(summary.p999_ms, 999.0), "{summary:?}");
        assert!(close(summary.max_ms, 1000.0), "{summary:?}");
        assert!(close(summary.mean_ms, 500.5), "{summary:?}");
    }

    #[test]
    fn batch_transfers_weigh_by_count_and_empty_is_zero() {
        let mut histogram = latency_histogram();
        latency_record(&mut histogram, 2_000, 99);
        latency_record(&mut histogram, 50_000, 1);
        latency_record(&mut histogram, 7, 0);
        let summary = LatencySummary::from_histogram(&histogram);
        assert_eq!(summary.count, 100);
        assert!((summary.p99_ms - 2.0).abs() < 0.01, "{summary:?}");
        assert!((summary.max_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert_eq!(
            LatencySummary::from_histogram(&latency_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut histogram = latency_histogram();
        latency_record(&mut histogram, 0, 1);
        latency_record(&mut histogram, u64::MAX, 1);
        assert_eq!(histogram.len(), 2);
        assert!(histogram.max() >= LATENCY_US_MAX);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_sorted(&values, 500), Some(50));
        assert_eq!(percentile_sorted(&values, 990), Some(99));
        assert_eq!(percentile_sorted(&values, 999), Some(100));
        assert_eq!(percentile_sorted(&values, 1000), Some(100));
        assert_eq!(percentile_sorted(&values, 1), Some(1));
        assert_eq!(percentile_sorted(&[7], 990), Some(7));
        assert_eq!(percentile_sorted(&[], 990), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn per_second_buckets_the_window_only() {
        let start = 3_000_000;
        let events = [
            event(2_999_999, 10, 5, 0), // warm-up: ignored
            event(3_000_000, 1_000, 1, 0),
            event(3_500_000, 3_000, 1, 1),
            event(4_000_000, 2_000, 10, 0),
            event(6_000_000, 9, 1, 0), // after the window: ignored
        ];
        let seconds = per_second(&events, start, 3);
        assert_eq!(seconds.len(), 3);
        assert_eq!(seconds[0].transfers, 2);
        assert_eq!(seconds[0].requests, 2);
        assert_eq!(seconds[0].errors, 1);
        assert_eq!(seconds[0].p99_ms, Some(3.0));
        assert_eq!(seconds[1].transfers, 10);
        assert_eq!(seconds[1].p99_ms, Some(2.0));
        assert_eq!(seconds[2].transfers, 0);
        assert_eq!(seconds[2].p99_ms, None);
    }

    #[test]
    fn kill_window_runs_from_the_kill_to_the_next_ack() {
        // Acks every 10 ms until 1.000 s, a kill command from 1.005 s to 1.100 s, then the
        // next ack at 1.400 s, then steady again until 3 s; a second kill at 3 s with no ack
        // after it.
        let mut acks: Vec<u64> = (0..=100).map(|i| i * 10_000).collect();
        acks.extend((0..=160).map(|i| 1_400_000 + i * 10_000));
        let kills = [
            KillTimes {
                started_us: 1_005_000,
                done_us: 1_100_000,
            },
            KillTimes {
                started_us: 3_000_000,
                done_us: 3_050_000,
            },
        ];
        let windows = kill_windows(&acks, &kills, 3_500_000);
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].to_next_ack_ms, 300.0);
        assert_eq!(windows[0].longest_gap_ms, 400.0, "1.000 s -> 1.400 s");
        assert!(!windows[0].censored);
        // No ack after the second kill: censored at the end of the window.
        assert_eq!(windows[1].to_next_ack_ms, 450.0);
        assert!(windows[1].censored);
        assert_eq!(windows[1].longest_gap_ms, 500.0);

        let summary = FailoverSummary::from_windows(&windows);
        assert_eq!(summary.kills, 2);
        assert_eq!(summary.to_next_ack_ms_median, 375.0);
        assert_eq!(summary.to_next_ack_ms_max, 450.0);
        assert_eq!(summary.censored, 1);
    }

    #[test]
    fn an_ack_inside_the_kill_command_does_not_hide_the_outage() {
        // An answer that was already in flight lands while the kill command runs; the outage
        // after it still shows as the longest gap.
        let acks = [100_000, 150_000, 900_000, 910_000];
        let kills = [KillTimes {
            started_us: 120_000,
            done_us: 200_000,
        }];
        let windows = kill_windows(&acks, &kills, 1_000_000);
        assert_eq!(windows[0].to_next_ack_ms, 700.0);
        assert_eq!(windows[0].longest_gap_ms, 750.0);
    }

    #[test]
    fn no_kills_no_windows() {
        assert!(kill_windows(&[1, 2, 3], &[], 10).is_empty());
        assert_eq!(
            FailoverSummary::from_windows(&[]),
            FailoverSummary::default()
        );
    }
}
