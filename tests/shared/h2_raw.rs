//! Raw HTTP/2 frames, for tests that misbehave on purpose (stream floods, oversized headers) where a real client
//! would refuse to. One file shared by source: `konnector-tests` includes it as `konnector_tests::h2_raw`, and the
//! gateway's own tests, which cannot depend on `konnector-tests` (it depends on the gateway), include it with
//! `#[path]`.

// Included as a private module by the gateway tests, which use only part of it.
#![allow(dead_code, unreachable_pub)]

use tokio::io::{AsyncRead, AsyncReadExt};

/// One HTTP/2 frame: the 9-byte header (RFC 9113 §4.1) and `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// What a client sends first: the connection preface (RFC 9113 §3.4), its own empty SETTINGS, and the ACK of the
/// server's SETTINGS, sent ahead without waiting for them.
pub fn client_preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend(frame(4, 1, 0, &[]));
    out
}

/// The HPACK block of a POST to `path` on `localhost` over https, followed by the `extra` fields.
pub fn post_header_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", path),
    ]
    .iter()
    .chain(extra)
    {
        block.extend(literal(n, v));
    }
    block
}

/// An HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2), for names and values shorter than
/// 127 bytes.
pub fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0u8, u8::try_from(name.len()).unwrap()];
    out.extend_from_slice(name.as_bytes());
    out.push(u8::try_from(value.len()).unwrap());
    out.extend_from_slice(value.as_bytes());
    out
}

/// Reads one frame: its type, flags, stream id and payload.
pub async fn read_frame<R: AsyncRead + Unpin>(io: &mut R) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await?;
    Ok((head[3], head[4], stream, payload))
}
