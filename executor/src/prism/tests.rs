//! Unit tests of the Prism Central client: trust, failures by step, and the preflight memory.

use super::*;

fn record(uid: &str, at: i64) -> PreflightRecord {
    PreflightRecord {
        cluster_uid: uid.into(),
        checked_at: Timestamp::from_second(at).unwrap(),
        trigger: Trigger::Unspecified,
        verdict: PreflightVerdict::Passed,
        message: String::new(),
    }
}

#[test]
fn memory_is_bounded_and_forgets() {
    let m = PreflightMemory::default();
    for i in 0..=MAX_REMEMBERED_PREFLIGHTS {
        let key = ClusterKey::new("ns", &format!("c{i}")).unwrap();
        m.remember(&key, record("u", i as i64 + 1));
    }
    assert_eq!(m.len(), MAX_REMEMBERED_PREFLIGHTS);
    // The oldest went first.
    assert!(m.last(&ClusterKey::new("ns", "c0").unwrap(), "u").is_none());
    let last = ClusterKey::new("ns", &format!("c{MAX_REMEMBERED_PREFLIGHTS}")).unwrap();
    assert!(m.last(&last, "u").is_some());
    // Another uid (the Cluster was re-created) sees nothing.
    assert!(m.last(&last, "other").is_none());
    m.forget(&last);
    assert!(m.last(&last, "u").is_none());
}

#[test]
fn credentials_never_print() {
    let c = Credentials::Basic {
        username: "admin".into(),
        password: "hunter2".into(),
    };
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!format!("{c:?}").contains("admin"));
    assert!(!format!("{:?}", Credentials::ApiKey("k3y".into())).contains("k3y"));
}

#[test]
fn messages_are_fixed_and_name_the_endpoint_only() {
    let e = "pc.example.com:9440";
    for f in [
        PreflightFailure::TrustBundle,
        PreflightFailure::Dns,
        PreflightFailure::Connect,
        PreflightFailure::Tls { reason: "x" },
        PreflightFailure::Unauthorized { status: 401 },
        PreflightFailure::UnexpectedAnswer(Unexpected::Status(500)),
        PreflightFailure::UnexpectedAnswer(Unexpected::NotJson),
        PreflightFailure::UnexpectedAnswer(Unexpected::NoAnswer),
        PreflightFailure::Timeout {
            after: Duration::from_secs(5),
            step: Step::Tls,
        },
    ] {
        let m = f.describe(e);
        assert!(m.contains(e), "{m}");
        assert_eq!(m, f.describe(e));
    }
    assert!(
        PreflightFailure::Timeout {
            after: Duration::from_millis(1500),
            step: Step::Request
        }
        .describe(e)
        .ends_with("within 1500ms (while waiting for its answer)")
    );
}

#[test]
fn bundles() {
    let pc = |insecure: bool, bundle: &str| PrismCentral {
        host: "h".into(),
        port: 9440,
        insecure,
        trust_bundle: bundle.into(),
    };
    // Only the Cluster's insecure: true turns verification off; without a bundle the system's roots verify.
    assert!(Target::new(&pc(false, "")).unwrap().verifies());
    assert!(!Target::new(&pc(true, "bm90IGEgYnVuZGxl")).unwrap().verifies());
    assert_eq!(
        Target::new(&pc(false, "%%%")).unwrap_err(),
        PreflightFailure::TrustBundle
    );
    // Base64 of text without a certificate.
    assert_eq!(
        Target::new(&pc(false, "bm90IGEgYnVuZGxl")).unwrap_err(),
        PreflightFailure::TrustBundle
    );
}
