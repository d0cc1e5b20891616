//! The sandbox transcript in the README, checked against a real run so that it cannot drift.
//!
//! The README shows what `./hack/sandbox.sh --keep` prints. `tests/sandbox_lifecycle.rs` runs the same binary the
//! same way and hands both texts to [`compare`], which normalises what changes from run to run (ports, temporary
//! directories, uids, durations, a HelmReleaseProxy's generated suffix, how many BeforeClusterDelete calls the
//! uninstall took and what remained at each of its waits, whether the reconciler or AfterControlPlaneInitialized
//! copied the credentials first) and then requires:
//! - every line outside the clusters' lifecycles, in order;
//! - each cluster's step lines (`ok   [wl-1] …`) and hook lines (`hook [wl-1] …`, one call CAPI made), in order:
//!   the clusters run in parallel, so their lines interleave differently on each run, but each cluster's own steps
//!   do not. A hook line equal to an earlier one of its cluster once the attempt number is left out (CAPI
//!   repeating a call with the same answer) counts once, since how many repeats there are depends on timing;
//! - every documented `wait` line and created or deleted object of a cluster among those it printed. Which
//!   changes land in which step, whether an update shows at all, and how often a BeforeClusterDelete waits depend
//!   on when the CAAPH stand-in and the reconciler act, so these are a subset check: the README may not show a
//!   line the sandbox did not print.
//!
//! The `==>` lines come from `hack/sandbox.sh` itself, not from the binary: each must match one of its `say` lines.

use std::collections::{BTreeMap, BTreeSet};

/// The start and end markers of the transcript in the README.
pub const START_MARKER: &str = "<!-- sandbox-output:start -->";
/// See [`START_MARKER`].
pub const END_MARKER: &str = "<!-- sandbox-output:end -->";

/// The lines of the fenced `text` block between the markers in `readme`.
pub fn documented(readme: &str) -> Result<Vec<String>, String> {
    let start = readme
        .find(START_MARKER)
        .ok_or("no sandbox-output start marker in the README")?;
    let end = readme
        .find(END_MARKER)
        .ok_or("no sandbox-output end marker in the README")?;
    let block = readme
        .get(start..end)
        .ok_or("the sandbox-output markers are out of order")?;
    let body = block
        .split_once("```text\n")
        .ok_or("no ```text fence between the sandbox-output markers")?
        .1;
    let body = body
        .rsplit_once("```")
        .ok_or("no closing fence between the sandbox-output markers")?
        .0;
    Ok(body.lines().map(str::to_owned).collect())
}

/// A documented transcript split into what `hack/sandbox.sh` says and what the binary prints.
#[derive(Debug, Default)]
pub struct Documented {
    /// The command line the transcript starts with.
    pub command: String,
    /// The script's own `==> …` lines, without the arrow.
    pub script: Vec<String>,
    /// Everything the binary printed: the lines after `==> starting konnector-sandbox …`.
    pub binary: Vec<String>,
}

/// Splits `lines` (from [`documented`]). Cargo's own progress lines are dropped: they depend on what was built.
pub fn split(lines: &[String]) -> Result<Documented, String> {
    let mut doc = Documented::default();
    let mut lines = lines.iter();
    doc.command = lines.next().ok_or("the transcript is empty")?.clone();
    for line in lines.by_ref() {
        if let Some(said) = line.strip_prefix("==> ") {
            doc.script.push(said.to_owned());
            if said.starts_with("starting konnector-sandbox") {
                break;
            }
        } else if !is_cargo_progress(line) {
            return Err(format!(
                "before `==> starting konnector-sandbox`, a line that neither hack/sandbox.sh nor cargo prints: {line:?}"
            ));
        }
    }
    doc.binary = lines.cloned().collect();
    if doc.binary.is_empty() {
        return Err("the transcript shows nothing the sandbox printed".into());
    }
    Ok(doc)
}

fn is_cargo_progress(line: &str) -> bool {
    let word = line.trim_start().split(' ').next().unwrap_or_default();
    line.starts_with(' ')
        && [
            "Finished",
            "Compiling",
            "Updating",
            "Downloaded",
            "Downloading",
            "Locking",
        ]
        .contains(&word)
}

/// The `say "…"` templates of hack/sandbox.sh.
pub fn say_templates(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("say \""))
        .filter_map(|l| l.rsplit_once('"').map(|(t, _)| t.to_owned()))
        .collect()
}

/// Whether `line` is what bash prints for `template`: `\$` is a literal `$`, and every expansion (`$NAME`, `$*`,
/// `${…}`) matches any text.
pub fn matches_template(template: &str, line: &str) -> bool {
    // Literal pieces between expansions.
    let mut pieces = vec![String::new()];
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'$') => {
                chars.next();
                pieces.last_mut().unwrap().push('$');
            }
            '$' => {
                match chars.peek() {
                    Some('{') => {
                        for c in chars.by_ref() {
                            if c == '}' {
                                break;
                            }
                        }
                    }
                    Some('*') | Some('@') => {
                        chars.next();
                    }
                    _ => {
                        while chars
                            .peek()
                            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                        {
                            chars.next();
                        }
                    }
                }
                pieces.push(String::new());
            }
            c => pieces.last_mut().unwrap().push(c),
        }
    }
    let (first, rest) = pieces.split_first().unwrap();
    let Some(mut remaining) = line.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for piece in middle {
        match remaining.find(piece.as_str()) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last.as_str())
}

/// `line` with what varies between runs replaced by placeholders.
pub fn normalise(line: &str) -> String {
    let mut s = replace_paths(line, "/konnector-sandbox-", "<state>");
    s = replace_paths(&s, "/konnector-executor-pki-", "<pki>");
    s = replace_paths(&s, "/konnector-capi-", "<capi>");
    s = replace_uids(&s);
    s = replace_ports(&s);
    // Before the durations: a generated suffix such as `1234s` must not read as one.
    s = replace_release_proxy_suffix(&s);
    s = replace_durations(&s);
    s = replace_call_count(&s);
    s = uninstall_progress(&s);
    s = hook_attempt(&s);
    first_install_credentials(&s)
}

/// `hook [wl-2] konnector-bcd.konnector attempt 3 -> …`: how often CAPI called before the answer changed depends
/// on how long the uninstall (or the missing Secret) lasted, so the attempt number is not compared.
fn hook_attempt(s: &str) -> String {
    const ATTEMPT: &str = " attempt ";
    if !s.starts_with("hook [") {
        return s.to_owned();
    }
    let Some(at) = s.find(ATTEMPT) else {
        return s.to_owned();
    };
    let after = &s[at + ATTEMPT.len()..];
    let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
    format!("{}{ATTEMPT}<n>{}", &s[..at], &after[digits..])
}

/// A BeforeClusterDelete that waits says what remains of the install at that moment (the HelmChartProxy being
/// deleted, how many HelmReleaseProxies are left), which depends on how far the CAAPH stand-in has got.
fn uninstall_progress(s: &str) -> String {
    const WAITING: &str = "waiting for CAAPH to uninstall the Konnector Agent: ";
    let waiting = s.starts_with("wait [") || s.starts_with("hook [");
    match (waiting, s.find(WAITING), s.rfind('"')) {
        (true, Some(at), Some(quote)) if quote > at => {
            format!("{}{WAITING}<what remains>{}", &s[..at], &s[quote..])
        }
        _ => s.to_owned(),
    }
}

/// AfterControlPlaneInitialized's answer says either that it copied the credentials or that they were already
/// there ("not re-written"): the sandbox's Clusters have their control plane initialised when they are created, so
/// the reconciler may install the agent before the hook arrives, and which of the two comes first varies from run
/// to run. Both are a first install done; the second form is read as the first. (BeforeClusterUpgrade's answer,
/// always "not re-written" for an unchanged Secret, is compared as printed.)
fn first_install_credentials(s: &str) -> String {
    const APPLIED: &str = "Konnector Agent applied: Secret ";
    const NOT_REWRITTEN: &str = " on the workload cluster not re-written (";
    if !s.contains("] AfterControlPlaneInitialized ") {
        return s.to_owned();
    }
    let Some(at) = s.find(APPLIED) else {
        return s.to_owned();
    };
    let rest = &s[at + APPLIED.len()..];
    let Some(secret_end) = rest.find(NOT_REWRITTEN) else {
        return s.to_owned();
    };
    let Some(reason_end) = rest.find(") and HelmChartProxy ") else {
        return s.to_owned();
    };
    format!(
        "{}Konnector Agent applied: credentials copied to Secret {} on the workload cluster{}",
        &s[..at],
        &rest[..secret_end],
        &rest[reason_end + 1..]
    )
}

/// Replaces every path whose last component starts with `marker` (a temporary directory) with `placeholder`.
fn replace_paths(s: &str, marker: &str, placeholder: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find(marker) {
        let start = rest[..at]
            .rfind(|c: char| c.is_whitespace() || "'\"@(=".contains(c))
            .map_or(0, |i| i + 1);
        let after = &rest[at + marker.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.push_str(&rest[..start]);
        out.push_str(placeholder);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn is_uid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
        })
}

fn replace_uids(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        if i + 36 <= s.len() && is_uid(&bytes[i..i + 36]) {
            out.push_str("<uid>");
            i += 36;
        } else {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn replace_ports(s: &str) -> String {
    const HOST: &str = "127.0.0.1:";
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find(HOST) {
        out.push_str(&rest[..at + HOST.len()]);
        let after = &rest[at + HOST.len()..];
        let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
        out.push_str(if digits > 0 { "<port>" } else { "" });
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// `140 ms`, `5.2s` and the like, as durations are printed: a number that starts a word, then `s` or ` ms` that
/// ends it.
fn replace_durations(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '.');
        if starts_word && chars[i].is_ascii_digit() {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j + 1 < chars.len() && chars[j] == '.' && chars[j + 1].is_ascii_digit() {
                j += 1;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
            }
            let unit = [&['s'][..], &[' ', 'm', 's'][..]]
                .into_iter()
                .find(|u| chars[j..].starts_with(u))
                .map(|u| u.len());
            if let Some(len) = unit {
                let k = j + len;
                if k == chars.len() || !chars[k].is_alphanumeric() {
                    out.push_str("<t>");
                    i = k;
                    continue;
                }
            }
            out.extend(&chars[i..j]);
            i = j;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// CAAPH names a HelmReleaseProxy `<HelmChartProxy>-<5 random characters>`.
fn replace_release_proxy_suffix(s: &str) -> String {
    const KIND: &str = "HelmReleaseProxy ";
    let Some(at) = s.find(KIND) else {
        return s.to_owned();
    };
    let name_start = at + KIND.len();
    let name_end = s[name_start..].find(' ').map_or(s.len(), |i| name_start + i);
    let name = &s[name_start..name_end];
    match name.rsplit_once('-') {
        Some((base, suffix))
            if suffix.len() == 5
                && suffix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            format!("{}{base}-<rand>{}", &s[..name_start], &s[name_end..])
        }
        _ => s.to_owned(),
    }
}

/// `after 3 calls`: how often BeforeClusterDelete was called depends on how long the uninstall took, and so does
/// which gateway answered the last call (the calls alternate between the two).
fn replace_call_count(s: &str) -> String {
    let Some(at) = s.find(" after ") else {
        return s.to_owned();
    };
    let after = &s[at + " after ".len()..];
    let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
    if digits == 0 || !after[digits..].starts_with(" calls") {
        return s.to_owned();
    }
    let s = format!("{} after <n>{}", &s[..at], &after[digits..]);
    match s.find(" via gateway-") {
        Some(g) => {
            let tail = &s[g + " via gateway-".len()..];
            let digits = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
            format!("{} via gateway-<n>{}", &s[..g], &tail[digits..])
        }
        None => s,
    }
}

/// A sandbox run's lines, sorted by what they are.
#[derive(Debug, Default, PartialEq)]
pub struct Lines {
    /// Lines outside the clusters' lifecycles, in order.
    pub other: Vec<String>,
    /// Per cluster, its step lines in order.
    pub steps: BTreeMap<String, Vec<String>>,
    /// Per cluster, its wait lines and the object changes printed under its steps.
    pub details: BTreeMap<String, BTreeSet<String>>,
}

/// Sorts `lines` after normalising each.
pub fn classify(lines: &[String]) -> Lines {
    let mut sorted = Lines::default();
    let mut current: Option<String> = None;
    for line in lines {
        let line = normalise(line);
        let cluster = |l: &str| {
            l.split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(c, _)| c.to_owned())
        };
        if line.starts_with("ok   [") || line.starts_with("FAIL [") {
            let c = cluster(&line).unwrap_or_default();
            sorted.steps.entry(c.clone()).or_default().push(line);
            current = Some(c);
        } else if line.starts_with("hook [") {
            // A call CAPI repeated with the same answer (BeforeClusterDelete while the uninstall runs, a Failure
            // until the Secret exists) is one line: how many repeats there were depends on timing.
            let c = cluster(&line).unwrap_or_default();
            let steps = sorted.steps.entry(c.clone()).or_default();
            if !steps.contains(&line) {
                steps.push(line);
            }
            current = Some(c);
        } else if line.starts_with("wait [") {
            let c = cluster(&line).unwrap_or_default();
            sorted.details.entry(c).or_default().insert(line);
        } else if line.starts_with("       ") && current.is_some() {
            let c = current.clone().unwrap_or_default();
            sorted
                .details
                .entry(c)
                .or_default()
                .insert(line.trim().to_owned());
        } else {
            current = None;
            sorted.other.push(line);
        }
    }
    sorted
}

/// Compares a documented transcript (`readme`) with what the sandbox printed (`printed`) and what
/// `hack/sandbox.sh` can say (`script`); `command` is how the test ran it, as the transcript's first line must
/// show. Returns every difference found.
pub fn compare(readme: &str, script: &str, command: &str, printed: &[String]) -> Result<(), String> {
    let doc = split(&documented(readme)?)?;
    let mut problems = Vec::new();
    if doc.command != command {
        problems.push(format!(
            "the transcript starts with {:?}, the test ran {command:?}",
            doc.command
        ));
    }
    let templates = say_templates(script);
    for said in &doc.script {
        if !templates.iter().any(|t| matches_template(t, said)) {
            problems.push(format!("hack/sandbox.sh does not say {said:?}"));
        }
    }
    let documented = classify(&doc.binary);
    let actual = classify(printed);
    if documented.other != actual.other {
        problems.push(format!(
            "the lines outside the lifecycles differ:\n--- documented\n{}\n--- printed\n{}",
            documented.other.join("\n"),
            actual.other.join("\n")
        ));
    }
    if documented.steps != actual.steps {
        problems.push(format!(
            "the step lines differ:\n--- documented\n{:#?}\n--- printed\n{:#?}",
            documented.steps, actual.steps
        ));
    }
    for (cluster, details) in &documented.details {
        let printed = actual.details.get(cluster).cloned().unwrap_or_default();
        // An object created and then updated between two of the scenario's snapshots shows as created only, so
        // whether an `updated` line appears depends on timing; `created` and `deleted` always appear.
        for line in details
            .difference(&printed)
            .filter(|l| !l.starts_with("updated "))
        {
            problems.push(format!(
                "documented for {cluster} but not printed: {line:?} (printed: {printed:#?})"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the README's sandbox transcript no longer matches what the sandbox prints; paste a fresh run of \
             `./hack/sandbox.sh --keep` between its sandbox-output markers:\n{}",
            problems.join("\n")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_what_varies_between_runs() {
        for (line, want) in [
            (
                "up: addresses in /tmp/konnector-sandbox-bw9YMM/sandbox.json",
                "up: addresses in <state>/sandbox.json",
            ),
            (
                "$ grpcurl -cacert /tmp/konnector-executor-pki-35XrYU/client/ca.crt 127.0.0.1:41987 list",
                "$ grpcurl -cacert <pki>/client/ca.crt 127.0.0.1:<port> list",
            ),
            (
                "--data-binary @/var/tmp/konnector-sandbox-a_1/wl-1.beforeclusterupgrade.json",
                "--data-binary @<state>/wl-1.beforeclusterupgrade.json",
            ),
            (
                r#"-d '{"cluster":{"name":"wl-1","uid":"01b9b538-fd6c-4ff6-9e90-f308cd9b1748"}}'"#,
                r#"-d '{"cluster":{"name":"wl-1","uid":"<uid>"}}'"#,
            ),
            (
                "ok   [wl-1] create cluster (CAPI stand-in) (140 ms)",
                "ok   [wl-1] create cluster (CAPI stand-in) (<t>)",
            ),
            (
                "API servers up, CAPI and CAAPH CRDs installed (5.2s)",
                "API servers up, CAPI and CAAPH CRDs installed (<t>)",
            ),
            (
                "every step behaved as expected in 5.8s; the summary",
                "every step behaved as expected in <t>; the summary",
            ),
            (
                "curl 'https://127.0.0.1:40445/x/konnector-bcu?timeout=20s'",
                "curl 'https://127.0.0.1:<port>/x/konnector-bcu?timeout=<t>'",
            ),
            (
                "       created HelmReleaseProxy tenants/konnector-agent-wl-1-w4qfn",
                "       created HelmReleaseProxy tenants/konnector-agent-wl-1-<rand>",
            ),
            (
                r#"ok   [wl-2] BeforeClusterDelete via gateway-2 -> Success retryAfterSeconds=0 after 3 calls "x" (2150 ms)"#,
                r#"ok   [wl-2] BeforeClusterDelete via gateway-<n> -> Success retryAfterSeconds=0 after <n> calls "x" (<t>)"#,
            ),
            (
                "hook [wl-2] konnector-bcd.konnector attempt 12 -> Success retryAfterSeconds=1 \"waiting for CAAPH \
                 to uninstall the Konnector Agent: HelmChartProxy tenants/konnector-agent-wl-2 is being deleted\"",
                "hook [wl-2] konnector-bcd.konnector attempt <n> -> Success retryAfterSeconds=1 \"waiting for CAAPH \
                 to uninstall the Konnector Agent: <what remains>\"",
            ),
            (
                "core manager is a process of its own, logging to /tmp/konnector-capi-Ab12/capi.log)",
                "core manager is a process of its own, logging to <capi>/capi.log)",
            ),
            // What must not change: versions, names, counts that are not durations.
            (
                "chart konnector-agent 1.3.0-rc.1; 2 cluster(s); 1 HelmReleaseProxy object(s) remain; wl-1",
                "chart konnector-agent 1.3.0-rc.1; 2 cluster(s); 1 HelmReleaseProxy object(s) remain; wl-1",
            ),
            ("v1alpha1/discovery", "v1alpha1/discovery"),
            // A first install the reconciler did just before the hook reads as the hook's own.
            (
                "ok   [wl-1] AfterControlPlaneInitialized via gateway-1 -> Success \"Konnector Agent applied: Secret \
                 ntnx-system/konnector-agent on the workload cluster not re-written (this executor copied these \
                 credentials for this Cluster before; the reconciler repairs drift) and HelmChartProxy \
                 tenants/konnector-agent-wl-1 applied (chart konnector-agent 1.3.0-rc.1)\" (299 ms)",
                "ok   [wl-1] AfterControlPlaneInitialized via gateway-1 -> Success \"Konnector Agent applied: \
                 credentials copied to Secret ntnx-system/konnector-agent on the workload cluster and HelmChartProxy \
                 tenants/konnector-agent-wl-1 applied (chart konnector-agent 1.3.0-rc.1)\" (<t>)",
            ),
            (
                "wait [wl-2] BeforeClusterDelete -> Success retryAfterSeconds=1 \"waiting for CAAPH to uninstall the \
                 Konnector Agent: HelmChartProxy tenants/konnector-agent-wl-2 is being deleted and 1 HelmReleaseProxy \
                 object(s) remain\"",
                "wait [wl-2] BeforeClusterDelete -> Success retryAfterSeconds=1 \"waiting for CAAPH to uninstall the \
                 Konnector Agent: <what remains>\"",
            ),
            // Not at BeforeClusterUpgrade, where "not re-written" is the answer to expect.
            (
                "ok   [wl-1] BeforeClusterUpgrade via gateway-2 -> Success \"Konnector Agent applied: Secret \
                 ntnx-system/konnector-agent on the workload cluster not re-written (x) and HelmChartProxy y\"",
                "ok   [wl-1] BeforeClusterUpgrade via gateway-2 -> Success \"Konnector Agent applied: Secret \
                 ntnx-system/konnector-agent on the workload cluster not re-written (x) and HelmChartProxy y\"",
            ),
        ] {
            assert_eq!(normalise(line), want, "{line}");
        }
    }

    #[test]
    fn script_lines_match_their_say_templates() {
        let script = "say \"using $KUBEBUILDER_ASSETS\"\nsay \"developer tools: ${tools[*]}\"\n\
                      say \"cached after it; \\$KUBEBUILDER_ASSETS wins\"\nsay \"starting konnector-sandbox $*\"\n";
        let templates = say_templates(script);
        assert_eq!(templates.len(), 4);
        for (line, ok) in [
            ("using /root/.cache/konnector/cp", true),
            ("developer tools: helm grpcurl kubectl", true),
            ("cached after it; $KUBEBUILDER_ASSETS wins", true),
            ("starting konnector-sandbox --keep", true),
            ("starting the sandbox", false),
            ("developer tools", false),
        ] {
            assert_eq!(templates.iter().any(|t| matches_template(t, line)), ok, "{line}");
        }
    }

    /// The README's own block, parsed as the end-to-end test parses it, agrees with itself and with
    /// hack/sandbox.sh: a broken fence or a `==>` line the script no longer says fails here, without API servers.
    #[test]
    fn the_readme_transcript_parses_and_its_script_lines_are_said() {
        let root = crate::tools::repo_root();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let script = std::fs::read_to_string(root.join("hack/sandbox.sh")).unwrap();
        let doc = split(&documented(&readme).unwrap()).unwrap();
        assert!(doc.binary.len() > 30, "{doc:#?}");
        compare(&readme, &script, "$ ./hack/sandbox.sh --keep", &doc.binary).unwrap();
    }

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_owned).collect()
    }

    const README: &str = "text\n<!-- sandbox-output:start -->\n```text\n$ ./hack/sandbox.sh --keep\n\
        \x20   Finished `dev` profile in 0.56s\n==> starting konnector-sandbox --keep\nstarting (1.0s)\n\
        ok   [wl-1] create (10 ms)\n       updated C\nok   [wl-2] create (12 ms)\n       created A\n\
        wait [wl-2] delete -> Success \"waiting\"\nok   [wl-2] delete after 3 calls (9 ms)\n       deleted A\n\
        done\n```\n<!-- sandbox-output:end -->\n";

    /// wl-1's `updated C` is documented but not printed: an update can merge into the creation it follows.
    #[test]
    fn a_run_that_interleaves_clusters_differently_matches() {
        let printed = lines(
            "starting (2.5s)\nok   [wl-2] create (40 ms)\n       created A\nok   [wl-1] create (1 ms)\n\
             wait [wl-2] delete -> Success \"waiting\"\nwait [wl-2] delete -> Success \"other\"\n\
             ok   [wl-2] delete after 5 calls (99 ms)\n       deleted A\n       updated B\ndone",
        );
        compare(
            README,
            "say \"starting konnector-sandbox $*\"",
            "$ ./hack/sandbox.sh --keep",
            &printed,
        )
        .unwrap();
    }

    /// CAPI's repeated calls with the same answer count once, wherever they fall among the cluster's steps.
    #[test]
    fn repeated_hook_calls_count_once() {
        let printed = lines(
            "hook [c] h attempt 1 -> Failure \"x\"\nok   [c] fixed (1 ms)\nhook [c] h attempt 2 -> Failure \"x\"\n\
             hook [c] h attempt 3 -> Success",
        );
        let once = lines(
            "hook [c] h attempt 1 -> Failure \"x\"\nok   [c] fixed (5 ms)\nhook [c] h attempt 2 -> Success",
        );
        assert_eq!(classify(&printed), classify(&once));
        let other = lines("ok   [c] fixed (5 ms)\nhook [c] h attempt 1 -> Success");
        assert_ne!(classify(&printed), classify(&other));
    }

    #[test]
    fn drift_is_reported() {
        let script = "say \"starting konnector-sandbox $*\"";
        let command = "$ ./hack/sandbox.sh --keep";
        let good = [
            "starting (2.5s)",
            "ok   [wl-2] create (40 ms)",
            "       created A",
            "ok   [wl-1] create (1 ms)",
            "wait [wl-2] delete -> Success \"waiting\"",
            "ok   [wl-2] delete after 5 calls (99 ms)",
            "       deleted A",
            "done",
        ]
        .join("\n");
        for (printed, what) in [
            (
                good.replace("ok   [wl-1] create", "ok   [wl-1] made"),
                "the step lines differ",
            ),
            (good.replace("done", "finished"), "outside the lifecycles"),
            (good.replace("\"waiting\"", "\"paused\""), "not printed"),
            (good.replace("       created A\n", ""), "not printed"),
        ] {
            let err = compare(README, script, command, &lines(&printed)).unwrap_err();
            assert!(err.contains(what), "{what}: {err}");
        }
        let err = compare(README, "say \"other\"", command, &lines(&good)).unwrap_err();
        assert!(err.contains("hack/sandbox.sh does not say"), "{err}");
        let err = compare(README, script, "$ ./hack/sandbox.sh", &lines(&good)).unwrap_err();
        assert!(err.contains("the test ran"), "{err}");
    }
}
