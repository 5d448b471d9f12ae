// Shared by the fuzz targets: decode, then check the invariants every decoder keeps.
use std::sync::{Arc, OnceLock};

use sohoa_schemas::{
    build_decoder, DecodeOutput, Decoder, DecoderContext, DecoderKind, EventBatchBuilder, Lineage,
    Pseudonymizer,
};

pub fn check(kind: DecoderKind, data: &[u8]) {
    static DECODERS: OnceLock<[Box<dyn Decoder>; 2]> = OnceLock::new();
    let decoders = DECODERS.get_or_init(|| {
        let ctx = DecoderContext {
            source_system: Arc::from("fuzz"),
            pseudonymizer: Arc::new(Pseudonymizer::new(b"fuzzing-key-0123456789").unwrap()),
        };
        [
            build_decoder(DecoderKind::Dvcqg, ctx.clone()),
            build_decoder(DecoderKind::Canonical, ctx),
        ]
    });
    // The dvcqg decoder's fast JSON reader must read as serde_json does, or decline.
    if let (DecoderKind::Dvcqg, Ok(text)) = (kind, std::str::from_utf8(data)) {
        if let Err(e) = sohoa_schemas::decode::readers_agree(text) {
            panic!("{e}");
        }
    }
    let decoder = &decoders[kind as usize];
    let mut out = DecodeOutput::default();
    decoder.decode(data, &mut out);
    // Deterministic: the same bytes decode to the same events and rejects.
    let mut again = DecodeOutput::default();
    decoder.decode(data, &mut again);
    assert_eq!(out.events, again.events);
    assert_eq!(out.rejects, again.rejects);
    // Every event is writable as Arrow and re-decodes through the canonical decoder.
    let mut builder = EventBatchBuilder::new();
    let lineage = Lineage { topic: "fuzz", partition: 0, offset: 0, ingested_at: 0, arrived_at: 0 };
    for e in &out.events {
        builder.append(e, &lineage);
        let json = e.to_json();
        let mut back = DecodeOutput::default();
        decoders[DecoderKind::Canonical as usize].decode(json.as_bytes(), &mut back);
        assert!(back.rejects.is_empty(), "{json}: {:?}", back.rejects);
        assert_eq!(back.events.len(), 1);
    }
    builder.finish().expect("decoded events always form a valid batch");
}
