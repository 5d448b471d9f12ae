//! A feed's messages held compressed, a chunk at a time.
//!
//! The demo keeps two years of messages while it produces them: as `String`s they are
//! about 600 MB, which next to three ingestors, the mock cluster and then the aggregator
//! set the demo's peak memory. Compressed in chunks of about a megabyte they take a
//! tenth of that, and producing decompresses one chunk at a time.

use std::ops::ControlFlow;

use anyhow::{Context, Result};

use super::Message;

/// Uncompressed bytes per chunk: large enough for zstd to find the JSON's repeats,
/// small enough that one decompressed chunk is nothing next to the rest.
const CHUNK_BYTES: usize = 1 << 20;

/// zstd's fastest level: generation and production each touch every byte once.
const LEVEL: i32 = 1;

/// Messages in order, compressed. Each chunk holds records of `key length (u32 LE),
/// key, payload length (u32 LE), payload`.
pub struct Packed {
    chunks: Vec<Chunk>,
    len: usize,
}

struct Chunk {
    compressed: Vec<u8>,
    raw_len: usize,
}

impl Packed {
    /// Pack `messages`, dropping each one as it goes, so that the peak is the feed
    /// unpacked and not twice it.
    pub fn pack(messages: Vec<Message>) -> Result<Packed> {
        let len = messages.len();
        let mut chunks = Vec::new();
        let mut raw = Vec::with_capacity(CHUNK_BYTES + (64 << 10));
        for m in messages {
            for field in [m.key.as_bytes(), m.payload.as_bytes()] {
                let n = u32::try_from(field.len()).context("a message over 4 GB")?;
                raw.extend_from_slice(&n.to_le_bytes());
                raw.extend_from_slice(field);
            }
            if raw.len() >= CHUNK_BYTES {
                chunks.push(Chunk::compress(&raw)?);
                raw.clear();
            }
        }
        if !raw.is_empty() {
            chunks.push(Chunk::compress(&raw)?);
        }
        Ok(Packed { chunks, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes held, compressed.
    pub fn compressed_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.compressed.len()).sum()
    }

    /// Call `f` with each message's key and payload, in order, until it breaks or fails.
    pub fn for_each(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let mut raw = Vec::new();
        let mut d = zstd::bulk::Decompressor::new().context("a zstd decompressor")?;
        for chunk in &self.chunks {
            raw.clear();
            raw.reserve(chunk.raw_len);
            d.decompress_to_buffer(&chunk.compressed, &mut raw)
                .context("unpacking the feed")?;
            let mut rest = raw.as_slice();
            while !rest.is_empty() {
                let (key, after) = field(rest)?;
                let (payload, after) = field(after)?;
                if f(key, payload)?.is_break() {
                    return Ok(());
                }
                rest = after;
            }
        }
        Ok(())
    }
}

impl Chunk {
    fn compress(raw: &[u8]) -> Result<Chunk> {
        Ok(Chunk {
            compressed: zstd::bulk::compress(raw, LEVEL).context("packing the feed")?,
            raw_len: raw.len(),
        })
    }
}

/// One length-prefixed field and what follows it.
fn field(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .context("a packed message cut short")?;
    let len = u32::from_le_bytes(*len) as usize;
    anyhow::ensure!(rest.len() >= len, "a packed message cut short");
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: usize) -> Message {
        Message {
            key: format!("000.00.10.H20-250101-{i:06}"),
            payload: format!(
                "{{\"MaHoSo\":\"{i}\",\"pad\":\"{}\"}}",
                "x".repeat(i % 3000)
            ),
            sent_at: i as i64,
        }
    }

    /// Enough messages for several chunks, one of them empty-keyed, come back in order,
    /// byte for byte, and take less room than they did.
    #[test]
    fn messages_come_back_in_order_and_smaller() {
        let mut messages: Vec<Message> = (0..3000).map(message).collect();
        messages[7].key.clear();
        let raw: usize = messages.iter().map(|m| m.key.len() + m.payload.len()).sum();
        let expected: Vec<(String, String)> = messages
            .iter()
            .map(|m| (m.key.clone(), m.payload.clone()))
            .collect();
        let packed = Packed::pack(messages).expect("packed");
        assert_eq!(packed.len(), 3000);
        assert!(packed.chunks.len() > 2, "{} chunks", packed.chunks.len());
        assert!(packed.compressed_bytes() < raw / 4);
        let mut got = Vec::new();
        packed
            .for_each(|k, p| {
                got.push((
                    String::from_utf8(k.to_vec())?,
                    String::from_utf8(p.to_vec())?,
                ));
                Ok(ControlFlow::Continue(()))
            })
            .expect("unpacked");
        assert_eq!(got, expected);
    }

    /// A break stops the walk; an error stops it and comes back.
    #[test]
    fn a_break_or_an_error_stops_the_walk() {
        let packed = Packed::pack((0..10).map(message).collect()).expect("packed");
        let mut seen = 0;
        packed
            .for_each(|_, _| {
                seen += 1;
                Ok(if seen == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })
            .expect("stopped");
        assert_eq!(seen, 3);
        seen = 0;
        let err = packed
            .for_each(|_, _| {
                seen += 1;
                anyhow::ensure!(seen < 4, "stop at the fourth");
                Ok(ControlFlow::Continue(()))
            })
            .expect_err("stopped");
        assert_eq!(seen, 4);
        assert!(err.to_string().contains("fourth"));
    }
}
