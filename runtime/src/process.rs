//! The standard `process_*` metrics (CPU, memory, file descriptors, threads, start time), read from `/proc/self`
//! on each scrape, under the names every Prometheus client library uses, so the usual dashboards and alerts (memory
//! against the pod's limit, descriptors against the limit) work unchanged.
//!
//! Linux only; elsewhere the collector writes nothing. A value that cannot be read is left out of that scrape
//! rather than reported as zero.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

use crate::metrics::Metrics;

/// `/proc` reports CPU times and the start time in USER_HZ ticks, which Linux fixes at 100 for user space on
/// every architecture (sysconf(_SC_CLK_TCK) answers the same, and would need `unsafe`).
const TICKS_PER_SECOND: f64 = 100.0;

/// Registers the process collector in `metrics`, unprefixed (`process_cpu_seconds_total`, …).
pub fn register_process_metrics(metrics: &Metrics) {
    metrics.register_unprefixed(|r| r.register_collector(Box::new(ProcessCollector)));
}

/// What one read of `/proc/self` found.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: Option<i64>,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: Option<i64>,
    /// Open file descriptors.
    pub open_fds: Option<i64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<i64>,
    /// Threads.
    pub threads: Option<i64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads this process's figures.
    pub fn read() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let mut stats = read("/proc/self/stat")
            .map(|s| parse_stat(&s, read("/proc/stat").as_deref().and_then(boot_time)))
            .unwrap_or_default();
        if let Some(status) = read("/proc/self/status") {
            // VmRSS in kB: no page size needed (which sysconf would give, through `unsafe`).
            stats.resident_memory_bytes = status_kib(&status, "VmRSS:").map(|k| k * 1024);
        }
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX));
        stats.max_fds = read("/proc/self/limits").as_deref().and_then(max_open_files);
        stats
    }
}

/// The fields of `/proc/self/stat` this collector uses; `boot_time` (seconds since the epoch) dates the start.
fn parse_stat(stat: &str, boot_time: Option<f64>) -> ProcessStats {
    // The command name (field 2) is in parentheses and may hold spaces or parentheses: fields are counted from
    // after its last `)`, where field 3 (state) starts.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return ProcessStats::default();
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5), so field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu = match (field(14), field(15)) {
        (Some(user), Some(system)) => Some((user + system) as f64 / TICKS_PER_SECOND),
        _ => None,
    };
    ProcessStats {
        cpu_seconds: cpu,
        threads: field(20).and_then(|v| i64::try_from(v).ok()),
        start_time_seconds: match (field(22), boot_time) {
            (Some(ticks), Some(boot)) => Some(boot + ticks as f64 / TICKS_PER_SECOND),
            _ => None,
        },
        virtual_memory_bytes: field(23).and_then(|v| i64::try_from(v).ok()),
        ..ProcessStats::default()
    }
}

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `kB` line of `/proc/self/status`, e.g. `VmRSS:    1234 kB`.
fn status_kib(status: &str, key: &str) -> Option<i64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<i64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Encodes [`ProcessStats::read`] on each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = ProcessStats::read();
        if let Some(v) = stats.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, Option<i64>); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stats.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stats.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                stats.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                stats.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                stats.threads,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        if let Some(v) = stats.start_time_seconds {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as a process may name itself.
        let stat = "4242 (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 150 0 0 20 0 7 0 12345 104857600 2500 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stats = parse_stat(stat, Some(1_700_000_000.0));
        assert_eq!(stats.cpu_seconds, Some(4.0));
        assert_eq!(stats.threads, Some(7));
        assert_eq!(stats.virtual_memory_bytes, Some(104_857_600));
        assert_eq!(stats.start_time_seconds, Some(1_700_000_123.45));
        assert_eq!(parse_stat("garbage", None), ProcessStats::default());
    }

    #[test]
    fn limits_status_and_boot_time_parse() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            status_kib("Name:\tx\nVmRSS:\t   10240 kB\n", "VmRSS:"),
            Some(10240)
        );
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\n"), Some(1_700_000_000.0));
    }

    #[test]
    fn this_process_is_measured_and_encoded() {
        let stats = ProcessStats::read();
        if cfg!(target_os = "linux") {
            assert!(stats.resident_memory_bytes.unwrap() > 0, "{stats:?}");
            assert!(stats.open_fds.unwrap() > 0, "{stats:?}");
            assert!(stats.max_fds.unwrap() >= stats.open_fds.unwrap(), "{stats:?}");
            assert!(stats.threads.unwrap() >= 1, "{stats:?}");
            assert!(stats.start_time_seconds.unwrap() > 1_600_000_000.0, "{stats:?}");
        }
        let metrics = Metrics::with_prefix("konnector_test");
        register_process_metrics(&metrics);
        let text = metrics.encode_text();
        if cfg!(target_os = "linux") {
            for family in [
                "# TYPE process_cpu_seconds_total counter",
                "# TYPE process_resident_memory_bytes gauge",
                "# TYPE process_virtual_memory_bytes gauge",
                "# TYPE process_open_fds gauge",
                "# TYPE process_max_fds gauge",
                "# TYPE process_threads gauge",
                "# TYPE process_start_time_seconds gauge",
            ] {
                assert!(text.contains(family), "{family} in\n{text}");
            }
        }
    }
}
