//! How the benchmark measures: child processes' CPU and memory from /proc, API calls from the API servers' own
//! counters, and latencies of work driven at a fixed concurrency.

use super::*;

/// A child process killed when dropped.
pub(super) struct Spawned {
    pub(super) child: Child,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `(VmRSS, VmHWM)` in KiB and CPU time (user + system) in clock ticks, from `/proc`.
pub(super) fn proc_stats(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces, closed by the last ')'): utime is field 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((kib("VmRSS:"), kib("VmHWM:"), ticks(11) + ticks(12)))
}

/// Clock ticks per second for `/proc/<pid>/stat`. The workspace denies unsafe code, so instead of calling
/// sysconf, `getconf CLK_TCK` answers from outside; 100 is Linux's value everywhere it matters.
pub(super) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Requests the API server has served so far (`apiserver_request_total`, all labels summed).
pub(super) async fn served_requests(client: &Client) -> anyhow::Result<f64> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await
        .context("cannot read the API server's metrics")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum())
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub(super) fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Runs every future of `work`, `concurrency` at a time, returning the latencies (ms) of those that succeeded, the
/// number that failed, and the wall time of the whole run.
pub(super) async fn drive<Fut>(
    work: impl IntoIterator<Item = Fut>,
    concurrency: usize,
) -> (Vec<f64>, usize, Duration)
where
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let results: Vec<(f64, bool)> = stream::iter(work)
        .map(|fut| async move {
            let t = Instant::now();
            let ok = fut.await.is_ok();
            (t.elapsed().as_secs_f64() * 1000.0, ok)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let failures = results.iter().filter(|(_, ok)| !ok).count();
    let mut ok: Vec<f64> = results
        .into_iter()
        .filter(|(_, ok)| *ok)
        .map(|(ms, _)| ms)
        .collect();
    ok.sort_by(f64::total_cmp);
    (ok, failures, elapsed)
}

pub(super) struct Counters<'a> {
    pub(super) clients: [&'a Client; 2],
}

impl Counters<'_> {
    pub(super) async fn total(&self) -> anyhow::Result<f64> {
        Ok(served_requests(self.clients[0]).await? + served_requests(self.clients[1]).await?)
    }
}

pub(super) fn report(
    runs: usize,
    latencies: &[f64],
    failures: usize,
    elapsed: Duration,
    calls: f64,
) -> PathReport {
    PathReport {
        runs,
        failures,
        per_second: ((runs - failures) as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0,
        p50_ms: (percentile(latencies, 0.5) * 10.0).round() / 10.0,
        p99_ms: (percentile(latencies, 0.99) * 10.0).round() / 10.0,
        api_calls_per_run: (calls / runs as f64 * 100.0).round() / 100.0,
    }
}
