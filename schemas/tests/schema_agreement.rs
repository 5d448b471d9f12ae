//! The JSON Schema and the Arrow schema are one definition: these tests prove the two
//! agree, value by value, not only by name.

mod common;

use std::io::Cursor;

use arrow::datatypes::DataType;
use arrow::json::ReaderBuilder;
use common::{decode, fixture};
use serde_json::Value;
use sohoa_schemas::json_schema::{event_json_schema, event_validator};
use sohoa_schemas::{events_schema, DecoderKind, DossierEvent, EventBatchBuilder, Lineage};

fn all_fixture_events() -> Vec<DossierEvent<'static>> {
    [
        "dvcqg/samples-envelope.json",
        "dvcqg/messy-record.json",
        "dvcqg/progress-envelope.json",
        "dvcqg/array-one-bad.json",
    ]
    .into_iter()
    .flat_map(|f| decode(DecoderKind::Dvcqg, fixture(f)).events)
    .collect()
}

fn lineage(i: usize) -> Lineage<'static> {
    Lineage {
        topic: "dossiers.dvcqg",
        partition: (i % 3) as i32,
        offset: 1000 + i as i64,
        ingested_at: 1_700_000_000_000_000 + i as i64,
        arrived_at: 1_699_999_999_000_000 + i as i64,
    }
}

#[test]
fn arrow_columns_are_the_json_schema_properties_in_order() {
    let json = event_json_schema();
    let props = json["properties"].as_object().unwrap();
    let required: Vec<&str> = json["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let schema = events_schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let prop_names: Vec<&str> = props.keys().map(String::as_str).collect();
    assert_eq!(names, prop_names);
    for f in schema.fields() {
        let p = &props[f.name()];
        let types: Vec<&str> = match &p["type"] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().map(|v| v.as_str().unwrap()).collect(),
            _ => unreachable!(),
        };
        let expect_null = types.contains(&"null") || !required.contains(&f.name().as_str());
        assert_eq!(f.is_nullable(), expect_null, "{}", f.name());
        let ok = match (f.data_type(), p["type"].clone()) {
            (DataType::Timestamp(_, Some(tz)), _) => {
                tz.as_ref() == "UTC" && p["format"] == "date-time"
            }
            (DataType::Utf8, _) => types.contains(&"string") && p.get("format").is_none(),
            (DataType::Boolean, _) => types.contains(&"boolean"),
            (DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64, _) => {
                types.contains(&"integer")
            }
            (DataType::List(_), _) => types.contains(&"array"),
            _ => false,
        };
        assert!(ok, "{} maps {:?} to {}", f.name(), p["type"], f.data_type());
        assert_eq!(
            f.metadata().get("description").map(String::as_str),
            p["description"].as_str(),
            "{} carries its description",
            f.name()
        );
    }
}

#[test]
fn every_decoded_event_validates_against_the_json_schema() {
    let events = all_fixture_events();
    assert!(events.len() >= 9);
    for e in &events {
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        let errors: Vec<String> = event_validator()
            .iter_errors(&v)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", e.dossier_code);
        // Every property is written, null or not, so readers see a stable shape.
        let written: Vec<&String> = v.as_object().unwrap().keys().collect();
        let lineage = [
            "source_topic",
            "source_partition",
            "source_offset",
            "ingested_at",
            "arrived_at",
        ];
        let expected: Vec<&String> = event_json_schema()["properties"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !lineage.contains(&k.as_str()))
            .collect();
        assert_eq!(written, expected);
    }
}

#[test]
fn builder_batch_equals_arrows_own_reading_of_the_canonical_json() {
    let events = all_fixture_events();
    let mut builder = EventBatchBuilder::new();
    let mut lines = String::new();
    for (i, e) in events.iter().enumerate() {
        let l = lineage(i);
        builder.append(e, &l);
        let mut v: Value = serde_json::from_str(&e.to_json()).unwrap();
        let o = v.as_object_mut().unwrap();
        o.insert("source_topic".into(), l.topic.into());
        o.insert("source_partition".into(), l.partition.into());
        o.insert("source_offset".into(), l.offset.into());
        o.insert(
            "ingested_at".into(),
            sohoa_schemas::event::format_micros(l.ingested_at).into(),
        );
        o.insert(
            "arrived_at".into(),
            sohoa_schemas::event::format_micros(l.arrived_at).into(),
        );
        lines.push_str(&v.to_string());
        lines.push('\n');
    }
    assert_eq!(builder.len(), events.len());
    let ours = builder.finish().unwrap();
    assert!(builder.is_empty(), "finish resets the builder");

    let mut reader = ReaderBuilder::new(events_schema())
        .with_batch_size(10_000)
        .build(Cursor::new(lines.into_bytes()))
        .unwrap();
    let theirs = reader.next().unwrap().unwrap();
    assert!(reader.next().is_none());
    assert_eq!(ours.schema(), theirs.schema());
    for (i, f) in ours.schema().fields().iter().enumerate() {
        assert_eq!(ours.column(i), theirs.column(i), "column {}", f.name());
    }
}

#[test]
fn canonical_json_round_trips_through_the_canonical_decoder() {
    for e in all_fixture_events() {
        let json = e.to_json();
        let bytes: &'static [u8] = Box::leak(json.into_bytes().into_boxed_slice());
        let out = decode(DecoderKind::Canonical, bytes);
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        assert_eq!(out.events, vec![e.clone()]);
        assert_eq!(out.warnings.total(), 0);
    }
}
