//! Prism Central awareness, against the Prism Central stand-in: every outcome of the preflight (success, DNS,
//! connect refused, untrusted TLS, 401, unexpected answer, timeout, redirect not followed, bad bundle) and of the
//! registration lookup (registered, not registered, unknown); then the same through the executor on real API
//! servers: a note and a Warning Event by default, a refusal that writes nothing when blocking, and what
//! GetAgentStatus reports.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use konnector_executor::{
    ExecutorConfig,
    domain::PrismCentral,
    prism::{
        AllowedHosts, Credentials, PreflightFailure, PreflightMode, PreflightVerdict, Registration, Step,
        Unexpected, preflight, registration,
    },
};
use konnector_proto::v1::{GetAgentStatusRequest, PreflightOutcome, PrismCentralRegistration, Trigger};
use konnector_tests::{
    caaph_stand_in::hcp_resource,
    executor_fixture::{
        ExecutorEnv, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD, cluster_event_reasons,
        cluster_events, executor_env, start_executor,
    },
    prism_central_stand_in::{Behaviour, PrismCentralStandIn, USERS_ME_PATH, untrusted_bundle},
    support,
    workload::ClusterOptions,
};
use kube::{Api, api::DynamicObject};
use tonic::Code;

const USER: &str = "admin";
/// The bound the checks get here. The slow stand-in waits far longer, so the timeout is certain, not a race.
const BOUND: Duration = Duration::from_millis(1500);
const SLOW: Duration = Duration::from_secs(30);

fn good() -> Credentials {
    Credentials::Basic {
        username: USER.into(),
        password: TEST_PASSWORD.into(),
    }
}

fn bad() -> Credentials {
    Credentials::Basic {
        username: USER.into(),
        password: "not-the-password".into(),
    }
}

/// Prism Central at `stand_in`, verified against `bundle` (empty: the values' fallback, no verification).
fn pc_at(stand_in: &PrismCentralStandIn, bundle: &str) -> PrismCentral {
    PrismCentral {
        host: "127.0.0.1".into(),
        port: stand_in.addr().port(),
        insecure: false,
        trust_bundle: bundle.into(),
    }
}

async fn stand_in(behaviour: Behaviour) -> PrismCentralStandIn {
    PrismCentralStandIn::start(USER, TEST_PASSWORD, behaviour)
        .await
        .unwrap()
}

/// A loopback port nothing listens on: bound, then released.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn preflight_passes_with_good_credentials_verified_tls() {
    let pc = stand_in(Behaviour::Normal).await;
    let verdict = preflight(&pc_at(&pc, &pc.trust_bundle()), &good(), BOUND).await;
    assert_eq!(verdict, PreflightVerdict::Passed);
    let seen = pc.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, USERS_ME_PATH);
    assert!(seen[0].authenticated);
}

#[tokio::test]
async fn without_a_bundle_an_unverifiable_server_gets_no_credentials() {
    // insecure=false and no bundle: the agent (Go) verifies against the system's roots, which do not sign the
    // stand-in's certificate. The check must fail the same way, before any request: the stand-in sees a refused
    // handshake and no request, so no Authorization header.
    let pc = stand_in(Behaviour::Normal).await;
    let endpoint = format!("127.0.0.1:{}", pc.addr().port());
    let f = match preflight(&pc_at(&pc, ""), &good(), BOUND).await {
        PreflightVerdict::Failed(f) => f,
        other => panic!("an unverifiable server passed: {other:?}"),
    };
    assert_eq!(
        f,
        PreflightFailure::Tls {
            reason: "its certificate is not signed by a CA in additionalTrustBundle or the system's roots"
        }
    );
    assert_eq!(
        f.describe(&endpoint),
        format!(
            "Prism Central {endpoint} failed TLS verification: its certificate is not signed by a CA in additionalTrustBundle or the system's roots; the credentials were not sent; check nutanix.prismCentralEndpoint.additionalTrustBundle (or insecure)"
        )
    );
    assert!(
        pc.seen().is_empty(),
        "a request reached an unverified server: {:?}",
        pc.seen()
    );
    // The stand-in counts the refused handshake when its side of it ends, which may be just after the client's.
    support::eventually("the stand-in saw the client refuse the handshake", || async {
        pc.refused_handshakes() == 1
    })
    .await;

    // The same with API-key credentials: nothing sent.
    let f = preflight(&pc_at(&pc, ""), &Credentials::ApiKey("an-api-key".into()), BOUND).await;
    assert!(
        matches!(f, PreflightVerdict::Failed(PreflightFailure::Tls { .. })),
        "{f:?}"
    );
    // And the registration lookup, which also carries the credentials.
    let Registration::Unknown(why) = registration(&pc_at(&pc, ""), &good(), "0b9f2a52", BOUND).await else {
        panic!("the lookup went through an unverified server");
    };
    assert!(why.contains("failed TLS verification"), "{why}");
    assert!(pc.seen().is_empty(), "{:?}", pc.seen());

    // Only insecure: true, the Cluster's own choice, sends them unverified (the agent does the same), even with
    // a bundle of another CA.
    let mut insecure = pc_at(&pc, &untrusted_bundle().unwrap());
    insecure.insecure = true;
    assert_eq!(
        preflight(&insecure, &good(), BOUND).await,
        PreflightVerdict::Passed
    );
    assert_eq!(pc.seen().len(), 1);
    assert!(pc.seen()[0].carried_credentials);
}

#[tokio::test]
async fn a_self_signed_certificate_given_as_the_bundle_is_trusted_as_itself() {
    // As Go's crypto/x509 trusts a root that is the leaf itself: whatever its CA flag.
    for ca in [false, true] {
        let pc = PrismCentralStandIn::start_self_signed(USER, TEST_PASSWORD, ca)
            .await
            .unwrap();
        assert_eq!(
            preflight(&pc_at(&pc, &pc.trust_bundle()), &good(), BOUND).await,
            PreflightVerdict::Passed,
            "a self-signed certificate (CA flag {ca}) given as the bundle"
        );
        let seen = pc.seen();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].authenticated);
        // Not given: unverifiable, and nothing sent.
        let fresh = PrismCentralStandIn::start_self_signed(USER, TEST_PASSWORD, ca)
            .await
            .unwrap();
        assert!(matches!(
            preflight(&pc_at(&fresh, ""), &good(), BOUND).await,
            PreflightVerdict::Failed(PreflightFailure::Tls { .. })
        ));
        // Another self-signed certificate as the bundle does not trust it either.
        assert!(matches!(
            preflight(&pc_at(&fresh, &pc.trust_bundle()), &good(), BOUND).await,
            PreflightVerdict::Failed(PreflightFailure::Tls { .. })
        ));
        assert!(fresh.seen().is_empty(), "{:?}", fresh.seen());
    }
}

#[tokio::test]
async fn preflight_names_each_failure() {
    let pc = stand_in(Behaviour::Normal).await;
    let endpoint = format!("127.0.0.1:{}", pc.addr().port());
    let failed = |v: PreflightVerdict| match v {
        PreflightVerdict::Failed(f) => f,
        other => panic!("expected a failure, got {other:?}"),
    };

    // DNS: a name under .invalid never resolves.
    let dns = PrismCentral {
        host: "prism-central.konnector.invalid".into(),
        port: 9440,
        insecure: true,
        trust_bundle: String::new(),
    };
    let f = failed(preflight(&dns, &good(), BOUND).await);
    assert_eq!(f, PreflightFailure::Dns);
    assert_eq!(
        f.describe("prism-central.konnector.invalid:9440"),
        "Prism Central prism-central.konnector.invalid:9440 is not reachable: its host name does not resolve; check nutanix.prismCentralEndpoint.url and the management cluster's DNS"
    );

    // Connect: nothing listens.
    let refused = PrismCentral {
        host: "127.0.0.1".into(),
        port: closed_port().await,
        insecure: true,
        trust_bundle: String::new(),
    };
    assert_eq!(
        failed(preflight(&refused, &good(), BOUND).await),
        PreflightFailure::Connect
    );

    // TLS: a bundle of a CA that did not sign the stand-in's certificate. Nothing was sent.
    let f = failed(preflight(&pc_at(&pc, &untrusted_bundle().unwrap()), &good(), BOUND).await);
    assert_eq!(
        f,
        PreflightFailure::Tls {
            reason: "its certificate is not signed by a CA in additionalTrustBundle or the system's roots"
        }
    );
    assert!(pc.seen().is_empty(), "a request went out over refused TLS");

    // A bundle that is not base64 PEM.
    assert_eq!(
        failed(preflight(&pc_at(&pc, "not base64!"), &good(), BOUND).await),
        PreflightFailure::TrustBundle
    );

    // Unauthorized.
    let f = failed(preflight(&pc_at(&pc, &pc.trust_bundle()), &bad(), BOUND).await);
    assert_eq!(f, PreflightFailure::Unauthorized { status: 401 });
    assert_eq!(
        f.describe(&endpoint),
        format!(
            "Prism Central {endpoint} refused the credentials (HTTP 401 to GET /api/nutanix/v3/users/me); check the username and password in the credentials Secret"
        )
    );

    // Unexpected answers: a server that is not Prism Central fails, or answers a web page.
    pc.set_behaviour(Behaviour::Status(500));
    let f = failed(preflight(&pc_at(&pc, &pc.trust_bundle()), &good(), BOUND).await);
    assert_eq!(f, PreflightFailure::UnexpectedAnswer(Unexpected::Status(500)));
    assert_eq!(
        f.describe(&endpoint),
        format!(
            "Prism Central {endpoint} gave an unexpected answer to GET /api/nutanix/v3/users/me (HTTP 500); is the URL Prism Central's?"
        )
    );
    pc.set_behaviour(Behaviour::Status(200));
    assert_eq!(
        failed(preflight(&pc_at(&pc, &pc.trust_bundle()), &good(), BOUND).await),
        PreflightFailure::UnexpectedAnswer(Unexpected::NotJson)
    );
}

#[tokio::test]
async fn preflight_is_bounded() {
    let pc = stand_in(Behaviour::Slow(SLOW)).await;
    let (at, credentials) = (pc_at(&pc, &pc.trust_bundle()), good());
    let checking = preflight(&at, &credentials, BOUND);
    // A hang guard, far above the bound: the check must end by itself.
    let verdict = tokio::time::timeout(Duration::from_secs(60), checking)
        .await
        .expect("the preflight did not end");
    let f = match verdict {
        PreflightVerdict::Failed(f) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        f,
        PreflightFailure::Timeout {
            after: BOUND,
            step: Step::Request
        }
    );
    assert!(
        f.describe("pc:1")
            .ends_with("did not answer within 1500ms (while waiting for its answer)"),
        "{}",
        f.describe("pc:1")
    );
}

#[tokio::test]
async fn basic_auth_is_not_sent_to_a_redirect_target() {
    let target = stand_in(Behaviour::Normal).await;
    let redirecting = stand_in(Behaviour::RedirectTo(format!("{}{USERS_ME_PATH}", target.url()))).await;
    let verdict = preflight(&pc_at(&redirecting, &redirecting.trust_bundle()), &good(), BOUND).await;
    assert_eq!(
        verdict,
        PreflightVerdict::Failed(PreflightFailure::UnexpectedAnswer(Unexpected::Status(302)))
    );
    assert_eq!(redirecting.seen().len(), 1);
    assert!(
        target.seen().is_empty(),
        "the redirect was followed: {:?}",
        target.seen()
    );
}

#[tokio::test]
async fn registration_outcomes() {
    let pc = stand_in(Behaviour::Normal).await;
    let at = pc_at(&pc, &pc.trust_bundle());
    let uuid = "0b9f2a52-4c1e-4b8e-9a53-7f0d6a3c1e11";
    assert_eq!(
        registration(&at, &good(), uuid, BOUND).await,
        Registration::NotRegistered
    );
    pc.register(uuid);
    assert_eq!(
        registration(&at, &good(), uuid, BOUND).await,
        Registration::Registered
    );
    assert_eq!(
        pc.seen().last().unwrap().path,
        format!("/karbon/v1-alpha.1/k8s/cluster-registrations/{uuid}")
    );
    let endpoint = format!("127.0.0.1:{}", pc.addr().port());
    assert_eq!(
        registration(&at, &bad(), uuid, BOUND).await,
        Registration::Unknown(format!(
            "Prism Central {endpoint} refused the credentials (HTTP 401 to the registration lookup)"
        ))
    );
    let refused = PrismCentral {
        port: closed_port().await,
        ..at.clone()
    };
    let Registration::Unknown(why) = registration(&refused, &good(), uuid, BOUND).await else {
        panic!("expected unknown");
    };
    assert!(why.contains("not reachable"), "{why}");
    // Only a UUID's characters reach the path.
    assert!(matches!(
        registration(&at, &good(), "../../api/nutanix/v3/users/me", BOUND).await,
        Registration::Unknown(_)
    ));
}

// Through the executor, on real API servers.

fn config(mode: PreflightMode) -> ExecutorConfig {
    ExecutorConfig {
        prism_central_checks: mode,
        prism_central_timeout: BOUND,
        ..ExecutorConfig::default()
    }
}

async fn apply(
    env: &ExecutorEnv,
    client_of: Option<&konnector_tests::executor_fixture::RunningExecutor>,
) -> Result<konnector_proto::v1::ApplyAgentResponse, tonic::Status> {
    let executor = client_of.unwrap_or(&env.executor);
    support::apply_agent(executor, env.cluster_ref(), Trigger::AfterControlPlaneInitialized).await
}

async fn status(env: &ExecutorEnv) -> konnector_proto::v1::GetAgentStatusResponse {
    env.executor
        .client()
        .await
        .unwrap()
        .get_agent_status(GetAgentStatusRequest {
            cluster: Some(env.cluster_ref()),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn executor_checks_prism_central_and_reports_registration() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "prism",
        config(PreflightMode::Warn),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let pc = stand_in(Behaviour::Normal).await;
    let wrong_password = PrismCentralStandIn::start(USER, "another-password", Behaviour::Normal)
        .await
        .unwrap();
    let hcps: Api<DynamicObject> = Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource());

    // Blocking: a refused password refuses the hook, writes nothing, and says why on the Cluster.
    env.set_cluster_config(wrong_password.cluster_config(TEST_CREDENTIALS_SECRET))
        .await
        .unwrap();
    let blocking = start_executor(&env.mgmt, config(PreflightMode::Block))
        .await
        .unwrap();
    let err = apply(&env, Some(&blocking)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let endpoint = format!("127.0.0.1:{}", wrong_password.addr().port());
    assert_eq!(
        err.message(),
        format!(
            "Prism Central {endpoint} refused the credentials (HTTP 401 to GET /api/nutanix/v3/users/me); check the username and password in the credentials Secret; nothing was applied (the Prism Central preflight is blocking)"
        )
    );
    assert!(hcps.list(&Default::default()).await.unwrap().items.is_empty());
    // Blocking and unreachable: UNAVAILABLE, as the network may come back by itself.
    let mut unreachable = wrong_password.cluster_config(TEST_CREDENTIALS_SECRET);
    unreachable["nutanix"]["prismCentralEndpoint"]["url"] =
        format!("https://127.0.0.1:{}", closed_port().await).into();
    env.set_cluster_config(unreachable).await.unwrap();
    let err = apply(&env, Some(&blocking)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    blocking.stop().await.unwrap();

    // Warning (the default): the same refusal applies anyway, with a note and a Warning Event.
    env.set_cluster_config(wrong_password.cluster_config(TEST_CREDENTIALS_SECRET))
        .await
        .unwrap();
    let answer = apply(&env, None).await.unwrap();
    assert!(answer.applied);
    let note = answer
        .notes
        .iter()
        .find(|n| n.starts_with("Prism Central preflight failed (applied anyway): "))
        .unwrap_or_else(|| panic!("no preflight note in {:?}", answer.notes));
    assert!(note.contains("refused the credentials"), "{note}");
    let events = cluster_events(&env.admin, TEST_NAMESPACE, &env.cluster.name)
        .await
        .unwrap();
    let warning = events
        .iter()
        .rfind(|e| e.reason.as_deref() == Some("PrismCentralPreflightFailed"))
        .expect("a PrismCentralPreflightFailed Event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(warning.note.as_deref(), Some(note.as_str()));

    let s = status(&env).await;
    let last = s.last_preflight.expect("the last preflight");
    assert_eq!(last.outcome, PreflightOutcome::Unauthorized as i32);
    assert_eq!(last.trigger, Trigger::AfterControlPlaneInitialized as i32);
    assert!(last.checked_at.is_some());
    assert!(note.ends_with(&last.message), "{note} / {}", last.message);
    assert_eq!(
        s.prism_central_registration,
        PrismCentralRegistration::Unknown as i32
    );
    assert!(
        s.prism_central_registration_message
            .contains("refused the credentials"),
        "{}",
        s.prism_central_registration_message
    );

    // The right Prism Central: the check passes, no note; not registered, then registered under the uid of the
    // workload cluster's kube-system Namespace.
    env.set_cluster_config(pc.cluster_config(TEST_CREDENTIALS_SECRET))
        .await
        .unwrap();
    let answer = apply(&env, None).await.unwrap();
    assert!(
        !answer.notes.iter().any(|n| n.contains("Prism Central preflight")),
        "{:?}",
        answer.notes
    );
    let s = status(&env).await;
    assert_eq!(
        s.last_preflight.as_ref().unwrap().outcome,
        PreflightOutcome::Passed as i32
    );
    assert_eq!(
        s.prism_central_registration,
        PrismCentralRegistration::NotRegistered as i32
    );
    assert!(s.prism_central_registration_message.is_empty());
    let kube_system = Api::<Namespace>::all(env.workload.client().await.unwrap())
        .get("kube-system")
        .await
        .unwrap();
    pc.register(kube_system.metadata.uid.as_deref().unwrap());
    assert_eq!(
        status(&env).await.prism_central_registration,
        PrismCentralRegistration::Registered as i32
    );
    // Every request the stand-ins saw was made with credentials, and only to them.
    assert!(pc.seen().iter().all(|r| r.carried_credentials));

    // Checks off: no preflight, no lookup, and the status says so.
    let off = start_executor(&env.mgmt, config(PreflightMode::Off))
        .await
        .unwrap();
    let before = pc.seen().len();
    apply(&env, Some(&off)).await.unwrap();
    let s = off
        .client()
        .await
        .unwrap()
        .get_agent_status(GetAgentStatusRequest {
            cluster: Some(env.cluster_ref()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pc.seen().len(), before, "checks off still called Prism Central");
    assert_eq!(
        s.prism_central_registration,
        PrismCentralRegistration::Unknown as i32
    );
    assert!(s.last_preflight.is_none());
    let reasons = cluster_event_reasons(&env.admin, TEST_NAMESPACE, &env.cluster.name)
        .await
        .unwrap();
    assert!(reasons.iter().any(|r| r == "PrismCentralPreflightFailed"));
}

#[tokio::test]
async fn api_keys_are_checked_for_reachability_only() {
    // The stand-in knows no API keys and refuses the request; the key is not judged by that (see `preflight`).
    let pc = stand_in(Behaviour::Normal).await;
    let verdict = preflight(
        &pc_at(&pc, &pc.trust_bundle()),
        &Credentials::ApiKey("an-api-key".into()),
        BOUND,
    )
    .await;
    assert_eq!(verdict, PreflightVerdict::PassedWithoutAuthentication);
    let seen = pc.seen();
    assert!(seen[0].carried_credentials && !seen[0].authenticated);
    // Unreachable is still a failure.
    let refused = PrismCentral {
        host: "127.0.0.1".into(),
        port: closed_port().await,
        insecure: true,
        trust_bundle: String::new(),
    };
    assert_eq!(
        preflight(&refused, &Credentials::ApiKey("k".into()), BOUND).await,
        PreflightVerdict::Failed(PreflightFailure::Connect)
    );
}

#[tokio::test]
async fn the_executor_refuses_an_unverifiable_prism_central_and_sends_it_nothing() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "prism-trust",
        config(PreflightMode::Block),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let pc = stand_in(Behaviour::Normal).await;
    let hcps: Api<DynamicObject> = Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource());
    // The Cluster names the stand-in with no bundle and insecure unset: the system's roots must verify it.
    let mut no_bundle = pc.cluster_config(TEST_CREDENTIALS_SECRET);
    let endpoint_config = no_bundle["nutanix"]["prismCentralEndpoint"]
        .as_object_mut()
        .unwrap();
    endpoint_config.remove("additionalTrustBundle");
    endpoint_config.remove("insecure");
    env.set_cluster_config(no_bundle).await.unwrap();

    let err = apply(&env, None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let endpoint = format!("127.0.0.1:{}", pc.addr().port());
    assert_eq!(
        err.message(),
        format!(
            "Prism Central {endpoint} failed TLS verification: its certificate is not signed by a CA in additionalTrustBundle or the system's roots; the credentials were not sent; check nutanix.prismCentralEndpoint.additionalTrustBundle (or insecure); nothing was applied (the Prism Central preflight is blocking)"
        )
    );
    assert!(hcps.list(&Default::default()).await.unwrap().items.is_empty());
    let s = status(&env).await;
    assert_eq!(s.last_preflight.unwrap().outcome, PreflightOutcome::Tls as i32);
    assert_eq!(
        s.prism_central_registration,
        PrismCentralRegistration::Unknown as i32
    );
    assert!(
        pc.seen().is_empty(),
        "the stand-in received requests (with credentials) over unverified TLS: {:?}",
        pc.seen()
    );
    // Both the preflight and the registration lookup were refused at the handshake.
    support::eventually("the stand-in saw both handshakes refused", || async {
        pc.refused_handshakes() >= 2
    })
    .await;
    assert!(pc.seen().is_empty(), "{:?}", pc.seen());
}

#[tokio::test]
async fn a_host_off_the_allow_list_is_never_contacted() {
    konnector_tests::init_test_logging();
    let allowed = ExecutorConfig {
        prism_central_allowed_hosts: AllowedHosts::new(["prism.example.com", "*.pc.example.net"]),
        ..config(PreflightMode::Block)
    };
    let env = executor_env("prism-allow", allowed, ClusterOptions::initialized())
        .await
        .unwrap();
    let pc = stand_in(Behaviour::Normal).await;
    env.set_cluster_config(pc.cluster_config(TEST_CREDENTIALS_SECRET))
        .await
        .unwrap();
    let err = apply(&env, None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let endpoint = format!("127.0.0.1:{}", pc.addr().port());
    assert!(
        err.message().starts_with(&format!(
            "Prism Central {endpoint} is not among the executor's allowed Prism Central hosts (--prism-central-allowed-hosts); nothing was sent to it"
        )),
        "{}",
        err.message()
    );
    let s = status(&env).await;
    assert_eq!(
        s.last_preflight.unwrap().outcome,
        PreflightOutcome::NotAllowed as i32
    );
    assert!(
        s.prism_central_registration_message
            .contains("not among the executor's allowed"),
        "{}",
        s.prism_central_registration_message
    );
    // Not even a TCP connection: no request, no handshake.
    assert!(pc.seen().is_empty());
    assert_eq!(pc.refused_handshakes(), 0);
}

#[test]
fn the_allow_list_matches_hosts_and_subdomains() {
    let list = AllowedHosts::new(["Prism.Example.com", "*.pc.example.net", " "]);
    assert!(list.allows("prism.example.com"));
    assert!(list.allows("PRISM.example.com."));
    assert!(list.allows("a.pc.example.net"));
    assert!(list.allows("b.a.pc.example.net"));
    assert!(
        !list.allows("pc.example.net"),
        "the wildcard is for names under the domain"
    );
    assert!(!list.allows("evilpc.example.net"));
    assert!(!list.allows("prism.example.com.evil.org"));
    assert!(!list.allows("127.0.0.1"));
    assert!(AllowedHosts::default().allows("anything"));
    assert!(AllowedHosts::new(Vec::<String>::new()).allows("anything"));
}
