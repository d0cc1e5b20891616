//! The benchmark report as the table hack/bench.sh prints.

use super::*;

/// The report as a table.
pub fn table(r: &ScaleReport) -> String {
    let mut out = format!(
        "{} Clusters, concurrency {}, Prism Central checks {}\n{:<40} {:>8} {:>9} {:>9} {:>9} {:>10}\n",
        r.clusters,
        r.concurrency,
        r.prism_central_checks,
        "path",
        "runs/s",
        "p50 ms",
        "p99 ms",
        "failures",
        "API calls"
    );
    for (name, p) in &r.paths {
        out.push_str(&format!(
            "{name:<40} {:>8.1} {:>9.1} {:>9.1} {:>9} {:>10.2}\n",
            p.per_second, p.p50_ms, p.p99_ms, p.failures, p.api_calls_per_run
        ));
    }
    for (name, p) in [("executor", &r.executor), ("gateway", &r.gateway)] {
        out.push_str(&format!(
            "{name:<9} RSS idle {:.1} MiB, peak {:.1} MiB, end {:.1} MiB; CPU {:.2} ms/hook\n",
            p.idle_rss_mib, p.peak_rss_mib, p.final_rss_mib, p.cpu_ms_per_hook
        ));
    }
    let rec = &r.reconciler;
    out.push_str(&format!(
        "reconciler: first pass over every Cluster {:.1} s; idle {:.1} API calls/minute over {} s ({} in-sync passes, {:.2} calls per pass, {} passes not in sync); RSS {:.1} MiB, peak {:.1} MiB; passes by result {:?}\n",
        rec.first_pass_seconds,
        rec.idle_api_calls_per_minute,
        rec.idle_seconds,
        rec.idle_passes,
        rec.api_calls_per_pass,
        rec.passes_not_in_sync,
        rec.final_rss_mib,
        rec.peak_rss_mib,
        rec.passes_by_result
    ));
    for (name, v) in &r.ratios {
        out.push_str(&format!("{name:<40} {v:.2}x\n"));
    }
    out
}
