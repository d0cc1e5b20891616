//! The CAPI side of `konnector doctor`: the ExtensionConfig's discovery, the caBundle CAPI injected against the
//! gateway's serving CA, the gateway Service's endpoints, and whether the gateway's NetworkPolicy admits CAPI.

use super::*;

pub(super) fn capi_checks(c: &CapiFindings) -> Vec<Check> {
    let mut checks = Vec::new();
    let ec = match &c.extension_config {
        Lookup::Found(ec) => ec,
        Lookup::Missing(what) => {
            checks.push(not_ok(
                names::EXTENSION_CONFIG,
                Verdict::Fail,
                format!("{what} not found: CAPI does not know konnector and calls none of its hooks"),
                "install the chart (it creates the ExtensionConfig), or pass --extension-config with the name of \
                 yours (the chart's extensionConfig.name)",
            ));
            return checks;
        }
        other => {
            checks.extend(unread(names::EXTENSION_CONFIG, other));
            return checks;
        }
    };
    checks.push(match &ec.discovered {
        Some((status, _, _)) if status == "True" => ok(
            names::EXTENSION_CONFIG,
            format!("ExtensionConfig {}: Discovered=True, {} handler(s)", ec.name, ec.handlers),
        ),
        Some((status, reason, message)) => not_ok(
            names::EXTENSION_CONFIG,
            Verdict::Fail,
            format!("ExtensionConfig {}: Discovered={status} {reason}: {message}", ec.name),
            "CAPI could not call Discovery; the checks below (caBundle, endpoints, NetworkPolicy) and \
             capi-controller-manager's log say why. CAPI retries on its own",
        ),
        None => not_ok(
            names::EXTENSION_CONFIG,
            Verdict::Warn,
            format!("ExtensionConfig {} has no Discovered condition yet", ec.name),
            "is CAPI running with the RuntimeSDK feature gate? (kubectl -n capi-system logs deploy/capi-controller-manager)",
        ),
    });
    checks.push(ca_bundle(ec, c.serving_ca.as_ref()));
    match &c.gateway {
        None => checks.push(check(
            names::ENDPOINTS,
            Verdict::Skip,
            format!("ExtensionConfig {} calls a URL, not a Service", ec.name),
            None,
        )),
        Some(Lookup::Found(gw)) => {
            checks.push(endpoints(gw));
            checks.push(network_policy(gw, &c.capi, c.policies.as_ref()));
        }
        Some(Lookup::Missing(what)) => checks.push(not_ok(
            names::ENDPOINTS,
            Verdict::Fail,
            format!("{what}, which ExtensionConfig {} names, does not exist", ec.name),
            "the ExtensionConfig and the chart disagree: reinstall, or fix spec.clientConfig.service",
        )),
        Some(other) => checks.extend(unread(names::ENDPOINTS, other)),
    }
    checks
}

fn pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

fn ca_bundle(ec: &crate::capi::ExtensionConfigView, serving: Option<&Lookup<Vec<u8>>>) -> Check {
    let bundle = pem_certs(&ec.ca_bundle);
    let Some(from) = &ec.inject_from else {
        return check(
            names::CA_BUNDLE,
            Verdict::Skip,
            format!(
                "no {} annotation: the caBundle ({} certificate(s)) is set by hand, and doctor cannot tell which CA \
                 the gateway serves with",
                crate::capi::INJECT_CA_ANNOTATION,
                bundle.len()
            ),
            None,
        );
    };
    let serving = match serving {
        Some(Lookup::Found(ca)) => pem_certs(ca),
        Some(Lookup::Missing(what)) => {
            return not_ok(
                names::CA_BUNDLE,
                Verdict::Fail,
                format!("{what} not found: CAPI has no CA to inject (the annotation names {from})"),
                "cert-manager issues it: kubectl describe certificate in the gateway's namespace",
            );
        }
        Some(other) => return unread(names::CA_BUNDLE, other).expect("not found"),
        None => return check(names::CA_BUNDLE, Verdict::Skip, "not read", None),
    };
    if serving.is_empty() {
        return not_ok(
            names::CA_BUNDLE,
            Verdict::Fail,
            format!("ca.crt in Secret {from} holds no PEM certificate"),
            "cert-manager writes it: kubectl describe certificate in the gateway's namespace",
        );
    }
    if bundle.is_empty() {
        return not_ok(
            names::CA_BUNDLE,
            Verdict::Fail,
            format!("spec.clientConfig.caBundle is empty: CAPI has not injected Secret {from}'s ca.crt yet"),
            "CAPI's controller injects it (RuntimeSDK feature gate); see capi-controller-manager's log",
        );
    }
    if serving.iter().all(|c| bundle.contains(c)) {
        ok(
            names::CA_BUNDLE,
            format!("caBundle holds the gateway's serving CA (Secret {from} ca.crt)"),
        )
    } else {
        not_ok(
            names::CA_BUNDLE,
            Verdict::Fail,
            format!(
                "caBundle ({} certificate(s)) does not hold the CA in Secret {from} ca.crt: CAPI cannot verify the \
                 gateway (a rotated CA not injected yet?)",
                bundle.len()
            ),
            "CAPI re-injects on its next resync of the ExtensionConfig; until then Discovery and every hook fail TLS",
        )
    }
}

fn endpoints(gw: &GatewayView) -> Check {
    if gw.target_port.is_none() {
        return not_ok(
            names::ENDPOINTS,
            Verdict::Fail,
            format!("Service {} has no port the ExtensionConfig calls", gw.service),
            "fix spec.clientConfig.service.port or the Service (the chart's is 443)",
        );
    }
    match (gw.ready, gw.not_ready) {
        (0, 0) => not_ok(
            names::ENDPOINTS,
            Verdict::Fail,
            format!(
                "Service {} has no endpoints: no gateway pod matches it",
                gw.service
            ),
            format!(
                "kubectl -n {} get pods,deploy -l app.kubernetes.io/component=gateway",
                namespace_of(&gw.service)
            ),
        ),
        (0, n) => not_ok(
            names::ENDPOINTS,
            Verdict::Fail,
            format!("Service {}: none of its {n} endpoint(s) is ready", gw.service),
            format!(
                "kubectl -n {} describe pods -l app.kubernetes.io/component=gateway",
                namespace_of(&gw.service)
            ),
        ),
        (r, 0) => ok(
            names::ENDPOINTS,
            format!("Service {}: {r} ready endpoint(s)", gw.service),
        ),
        (r, n) => not_ok(
            names::ENDPOINTS,
            Verdict::Warn,
            format!("Service {}: {r} ready endpoint(s), {n} not ready", gw.service),
            format!(
                "kubectl -n {} describe pods -l app.kubernetes.io/component=gateway",
                namespace_of(&gw.service)
            ),
        ),
    }
}

/// Whether one NetworkPolicy port entry covers the gateway's hook port (named or numbered).
fn port_matches(
    port: &k8s_openapi::api::networking::v1::NetworkPolicyPort,
    name: Option<&str>,
    number: Option<i32>,
) -> bool {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
        return false;
    }
    match &port.port {
        None => true,
        Some(IntOrString::Int(n)) => {
            number.is_some_and(|num| num == *n || port.end_port.is_some_and(|end| (*n..=end).contains(&num)))
        }
        Some(IntOrString::String(s)) => name == Some(s.as_str()),
    }
}

/// How the gateway's NetworkPolicies treat calls from one CAPI controller.
enum Admission {
    /// No policy selects the gateway pods for ingress.
    Unrestricted,
    /// This policy lets it in.
    By(String),
    /// Only an ipBlock could let it in, which doctor cannot judge from labels.
    Unknown(String),
    /// These policies select the gateway and none lets it in.
    Refused(Vec<String>),
}

fn admission(policies: &[NetworkPolicy], gw: &GatewayView, capi: &CapiController) -> Admission {
    let gw_namespace = namespace_of(&gw.service);
    let target = gw.target_port.as_deref().unwrap_or_default();
    let (name, number) = match target.parse::<i32>() {
        Ok(n) => (
            gw.pod_ports
                .iter()
                .find(|(_, p)| **p == n)
                .map(|(k, _)| k.as_str()),
            Some(n),
        ),
        Err(_) => (Some(target), gw.pod_ports.get(target).copied()),
    };
    let mut selecting = Vec::new();
    let mut ip_block = None;
    for policy in policies {
        let Some(spec) = &policy.spec else { continue };
        let ingress_typed = spec
            .policy_types
            .as_ref()
            .is_none_or(|t| t.iter().any(|t| t == "Ingress"));
        if !ingress_typed || !selects(&spec.pod_selector.clone().unwrap_or_default(), &gw.pod_labels) {
            continue;
        }
        let policy_name = policy.metadata.name.clone().unwrap_or_default();
        for rule in spec.ingress.iter().flatten() {
            let ports_ok = rule
                .ports
                .as_ref()
                .is_none_or(|ps| ps.is_empty() || ps.iter().any(|p| port_matches(p, name, number)));
            if !ports_ok {
                continue;
            }
            let Some(from) = rule.from.as_ref().filter(|f| !f.is_empty()) else {
                return Admission::By(policy_name);
            };
            for peer in from {
                if peer.ip_block.is_some() {
                    ip_block = Some(policy_name.clone());
                    continue;
                }
                let ns_ok = match &peer.namespace_selector {
                    Some(sel) => selects(sel, &capi.namespace_labels),
                    None => capi.namespace == gw_namespace,
                };
                let pod_ok = peer
                    .pod_selector
                    .as_ref()
                    .is_none_or(|sel| selects(sel, &capi.pod_labels));
                if ns_ok && pod_ok {
                    return Admission::By(policy_name);
                }
            }
        }
        selecting.push(policy_name);
    }
    match (selecting.is_empty(), ip_block) {
        (true, _) => Admission::Unrestricted,
        (false, Some(p)) => Admission::Unknown(p),
        (false, None) => Admission::Refused(selecting),
    }
}

fn network_policy(
    gw: &GatewayView,
    capi: &Lookup<Vec<CapiController>>,
    policies: Option<&Lookup<Vec<NetworkPolicy>>>,
) -> Check {
    let controllers = match capi {
        Lookup::Found(c) if !c.is_empty() => c,
        Lookup::Found(_) | Lookup::Missing(_) => {
            return not_ok(
                names::NETWORK_POLICY,
                Verdict::Warn,
                format!(
                    "no Deployment labelled {}: cannot tell which namespace calls the hooks",
                    crate::capi::CAPI_PROVIDER_LABEL
                ),
                "is CAPI installed on this cluster (clusterctl init)?",
            );
        }
        other => return unread(names::NETWORK_POLICY, other).expect("not found"),
    };
    let policies = match policies {
        Some(Lookup::Found(p)) => p,
        Some(other) => {
            return unread(names::NETWORK_POLICY, other)
                .unwrap_or_else(|| check(names::NETWORK_POLICY, Verdict::Skip, "not read", None));
        }
        None => return check(names::NETWORK_POLICY, Verdict::Skip, "not read", None),
    };
    let mut admitted = Vec::new();
    for capi in controllers {
        match admission(policies, gw, capi) {
            Admission::Unrestricted => admitted.push(format!(
                "{} (no NetworkPolicy restricts the gateway)",
                capi.namespace
            )),
            Admission::By(p) => admitted.push(format!("{} (NetworkPolicy {p})", capi.namespace)),
            Admission::Unknown(p) => {
                return not_ok(
                    names::NETWORK_POLICY,
                    Verdict::Warn,
                    format!(
                        "NetworkPolicy {p} admits the gateway's callers by IP block: doctor cannot tell whether CAPI in namespace {} is one",
                        capi.namespace
                    ),
                    "check that the ipBlock covers the CAPI controller's pod IPs",
                );
            }
            Admission::Refused(ps) => {
                return not_ok(
                    names::NETWORK_POLICY,
                    Verdict::Fail,
                    format!(
                        "CAPI runs in namespace {}, and NetworkPolicy {} lets no pod there reach the gateway's hook port: every hook call times out",
                        capi.namespace,
                        ps.join(", ")
                    ),
                    format!(
                        "add {} to the chart's gateway.networkPolicy.callerNamespaces",
                        capi.namespace
                    ),
                );
            }
        }
    }
    ok(
        names::NETWORK_POLICY,
        format!(
            "CAPI's controller can call the gateway from {}",
            admitted.join(", ")
        ),
    )
}
