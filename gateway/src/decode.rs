//! Request decoding: the body (bounded), the hook request JSON and CAPI's `?timeout=` query parameter.

use std::{sync::Arc, time::Duration};

use axum::body::{Body, HttpBody};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::capi::HookRequest;
use crate::catalog::{HOOKS_API_VERSION, Hook};

/// A request body read whole, holding its room in the gateway's body budget until dropped.
#[derive(Debug)]
pub struct BufferedBody {
    /// The body.
    pub bytes: Vec<u8>,
    _room: Option<OwnedSemaphorePermit>,
}

/// Reads the whole body, refusing more than `limit` bytes. Bytes take room in `room` (one permit per byte), waiting
/// while there is none, so all bodies being read or held together never exceed the budget. A body with a
/// Content-Length (CAPI always sends one) takes room for all of it at once, before reading: bodies that each held
/// part of the room while waiting for the rest could wait on each other until their read timeouts. A body without
/// one takes room as its bytes arrive. The error is the Failure message.
///
/// What stays: a client that announces large bodies and sends them slowly holds their room until its read timeout,
/// and bodies behind it wait their turn (in order, never beyond that timeout). It holds no request permit.
pub async fn read_body(mut body: Body, limit: usize, room: &Arc<Semaphore>) -> Result<BufferedBody, String> {
    let too_large = || format!("request body exceeds the gateway's limit of {limit} bytes");
    let shutting_down = |_| "the gateway is shutting down".to_owned();
    let hint = body.size_hint();
    let announced = usize::try_from(hint.lower()).unwrap_or(usize::MAX);
    if announced > limit {
        return Err(too_large());
    }
    let mut held: Option<OwnedSemaphorePermit> = match hint.exact() {
        Some(exact) if exact > 0 => {
            let exact = u32::try_from(exact).map_err(|_| too_large())?;
            Some(
                room.clone()
                    .acquire_many_owned(exact)
                    .await
                    .map_err(shutting_down)?,
            )
        }
        _ => None,
    };
    // Frames are kept as hyper hands them over and joined once at the end: growing one buffer as bytes arrive
    // would hold up to twice the room taken.
    let mut chunks = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "request body could not be read".to_owned())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let need = len + data.len();
        if need > limit {
            return Err(too_large());
        }
        let have = held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        if need > have {
            let more = u32::try_from(need - have).map_err(|_| too_large())?;
            let permit = room
                .clone()
                .acquire_many_owned(more)
                .await
                .map_err(shutting_down)?;
            match held.as_mut() {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
        }
        len = need;
        chunks.push(data);
    }
    let bytes = if chunks.len() == 1 {
        Vec::from(chunks.pop().expect("one chunk"))
    } else {
        let mut bytes = Vec::with_capacity(len);
        for chunk in chunks {
            bytes.extend_from_slice(&chunk);
        }
        bytes
    };
    Ok(BufferedBody { bytes, _room: held })
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

    #[tokio::test]
    async fn bodies_wait_for_room_in_the_budget_and_give_it_back() {
        let room = Arc::new(Semaphore::new(10));
        let first = read_body(Body::from(vec![b'x'; 10]), 100, &room).await.unwrap();
        assert_eq!(first.bytes.len(), 10);
        assert_eq!(room.available_permits(), 0, "a body holds room while it is held");
        // The next body (its length announced) waits for all of its room at once, then reads.
        let second = tokio::spawn({
            let room = room.clone();
            async move { read_body(Body::from(vec![b'y'; 6]), 100, &room).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "a body was read without room");
        drop(first);
        assert_eq!(second.await.unwrap().unwrap().bytes, vec![b'y'; 6]);
        assert_eq!(room.available_permits(), 10);
        let err = read_body(Body::from(vec![b'z'; 101]), 100, &room)
            .await
            .unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
        assert_eq!(room.available_permits(), 10);
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
