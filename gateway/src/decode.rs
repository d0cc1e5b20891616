//! Request decoding: the body (bounded), the hook request JSON and CAPI's `?timeout=` query parameter.

use std::time::Duration;

use axum::body::{Body, Bytes};

use crate::capi::HookRequest;
use crate::catalog::{HOOKS_API_VERSION, Hook};

/// Reads the whole body, refusing more than `limit` bytes. The error is the Failure message.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, String> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large =
            std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            format!("request body exceeds the gateway's limit of {limit} bytes")
        } else {
            "request body could not be read".to_owned()
        }
    })
}

/// Decodes a hook request body and checks its TypeMeta against the path. The error is the Failure message: it says
/// where decoding stopped but never quotes the body.
pub fn decode(hook: Hook, bytes: &[u8]) -> Result<HookRequest, String> {
    let request: HookRequest = serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Io => "could not be read",
            serde_json::error::Category::Syntax => "is not valid JSON",
            serde_json::error::Category::Data => "does not have the shape of a hook request",
            serde_json::error::Category::Eof => "ends before the JSON is complete",
        };
        format!("request body {what} (line {}, column {})", e.line(), e.column())
    })?;
    if let Some(api_version) = request.api_version.as_deref()
        && api_version != HOOKS_API_VERSION
    {
        return Err(format!("request apiVersion is not {HOOKS_API_VERSION}"));
    }
    if let Some(kind) = request.kind.as_deref()
        && kind != hook.request_kind()
    {
        return Err(format!(
            "request kind does not match this handler, which serves {}",
            hook.request_kind()
        ));
    }
    Ok(request)
}

/// Parses CAPI's `timeout` query parameter, a Go duration such as `10s`, `1m30s` or `500ms`. Anything else is
/// ignored (`None`): the parameter is informational.
pub fn query_timeout(query: &str) -> Option<Duration> {
    let value = query.split('&').find_map(|kv| kv.strip_prefix("timeout="))?;
    parse_go_duration(value).filter(|d| !d.is_zero())
}

/// A small Go `time.Duration` string parser: a sequence of decimal numbers with units ns, us, µs, ms, s, m, h.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        for bad in ["", "10", "s", "10x", "-1s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
        assert_eq!(query_timeout("a=b&timeout=20s"), Some(Duration::from_secs(20)));
        assert_eq!(query_timeout("timeout=0s"), None);
    }

    #[test]
    fn decode_checks_type_meta() {
        let ok = br#"{"apiVersion":"hooks.runtime.cluster.x-k8s.io/v1alpha1","kind":"BeforeClusterDeleteRequest"}"#;
        assert!(decode(Hook::BeforeClusterDelete, ok).is_ok());
        let err = decode(Hook::AfterControlPlaneInitialized, ok).unwrap_err();
        assert!(err.contains("kind does not match"), "{err}");
        let err = decode(Hook::BeforeClusterDelete, br#"{"apiVersion":"v1"}"#).unwrap_err();
        assert!(err.contains("apiVersion"), "{err}");
        let err = decode(Hook::BeforeClusterDelete, br#"{"cluster": "hunter2"}"#).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
