//! Each template input validated on its own, by what it is, before anything is rendered.

use super::{RenderError, TemplateValues, invalid};

/// Validates each input on its own, by what it is. Messages name the input and the rule, never the value.
pub fn validate_inputs(v: &TemplateValues) -> Result<(), RenderError> {
    for (name, value) in [
        ("AgentName", &v.agent_name),
        ("PrismCredentialsSecretName", &v.prism_credentials_secret_name),
        ("ClusterName", &v.cluster_name),
    ] {
        if value.is_empty() || !is_name_prefix(value) {
            return Err(invalid(
                name,
                "it must be a Kubernetes object name (lowercase letters, digits, '-' and '.')",
            ));
        }
    }
    if !v.additional_trust_bundle_config_map_name.is_empty()
        && !is_name_prefix(&v.additional_trust_bundle_config_map_name)
    {
        return Err(invalid(
            "AdditionalTrustBundleConfigMapName",
            "it must be a Kubernetes object name",
        ));
    }
    // '_' is no DNS host name character, but resolvers and CAREN accept it and Prism Central deployments use it;
    // it has no meaning in YAML, so only the template's quoting (checked after rendering) matters.
    if !is_host_with(&v.prism_central_host, b"-_") {
        return Err(invalid(
            "PrismCentralHost",
            "it must be a DNS name or an IP address (letters, digits, '-', '_', '.', and ':' for IPv6)",
        ));
    }
    if !v.control_plane_endpoint.is_empty() {
        let host_port = v
            .control_plane_endpoint
            .strip_prefix("https://")
            .and_then(|rest| rest.rsplit_once(':'))
            .filter(|(host, port)| {
                // An IPv6 address only in brackets: unbracketed, its colons would read as a port.
                let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                    Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                    None => !host.contains(':') && is_host(host),
                };
                host_ok && !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
            });
        if host_port.is_none() {
            return Err(invalid(
                "ControlPlaneEndpoint",
                "it must be https://<DNS name or IP address>:<port>, with an IPv6 address in brackets",
            ));
        }
    }
    if !is_base64(&v.prism_central_additional_trust_bundle) {
        return Err(invalid(
            "PrismCentralAdditionalTrustBundle",
            "it must be standard base64 (A-Z, a-z, 0-9, '+', '/', with '=' only as trailing padding) on one line",
        ));
    }
    validate_category_mappings(&v.category_mappings)
}

/// Each category key and value is non-empty, has no leading or trailing space, and holds no `,` or `=` (which join
/// them), no control character (newlines), no `"` and no `\`. Other characters, YAML's included (`:`, `#`, `&`,
/// `'`...), are as CAREN let them through: whether they are safe depends on the template's quoting, so
/// [`check_contract`] requires the rendered `categoryMappings` to read back exactly as given, which refuses them
/// where the template leaves them unquoted. `{{` is escaped for CAAPH like every other value.
fn validate_category_mappings(mappings: &str) -> Result<(), RenderError> {
    if mappings.is_empty() {
        return Ok(());
    }
    for (i, pair) in mappings.split(',').enumerate() {
        let position = i + 1;
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid(
                "CategoryMappings",
                format!("category {position} has no key=value form (a key or value holds ',' or '=')"),
            ));
        };
        for (part, text) in [("key", key), ("value", value)] {
            let allowed = |c: char| !c.is_control() && !matches!(c, '"' | '\\' | '=' | ',');
            if text.is_empty() || !text.chars().all(allowed) || text.starts_with(' ') || text.ends_with(' ') {
                return Err(invalid(
                    "CategoryMappings",
                    format!(
                        "the {part} of category {position} must be non-empty, without leading or trailing spaces, control characters, '\"' or '\\'"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A Kubernetes name or a prefix of one (the cluster name may have been cut at 40 bytes).
fn is_name_prefix(s: &str) -> bool {
    s.len() <= 253
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// A DNS name (letters, digits, '-', '.'), an IPv4 address, or an IPv6 address without brackets.
fn is_host(s: &str) -> bool {
    is_host_with(s, b"-")
}

/// [`is_host`], with `inner` the characters a label may hold besides letters and digits (never first or last).
fn is_host_with(s: &str, inner: &[u8]) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.starts_with(|c: char| c.is_ascii_alphanumeric())
            && label.ends_with(|c: char| c.is_ascii_alphanumeric())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || inner.contains(&b))
    })
}

/// Standard base64 on one line; empty is allowed (no bundle).
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Joins categories as `key=value` with commas: entries with an empty key or value are dropped, and exact
/// duplicate pairs are dropped after their first occurrence (the same key with another value is kept).
pub fn category_mappings(categories: &[(String, String)]) -> String {
    let mut seen = std::collections::HashSet::new();
    categories
        .iter()
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .filter(|pair| seen.insert(*pair))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
