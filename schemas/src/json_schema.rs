//! The one definition of the event: `json/dossier-event.v1.schema.json`.
//!
//! The Arrow schema of the `events` table is derived from that file at run time, so there
//! is no second, hand-kept copy that could drift. The derivation rules are small and
//! explicit:
//!
//! | JSON Schema                                   | Arrow                              |
//! |-----------------------------------------------|------------------------------------|
//! | `string` with `format: date-time`             | `Timestamp(µs, "UTC")`             |
//! | `string` (with or without `enum`)             | `Utf8`                             |
//! | `integer` with `minimum`/`maximum`            | the narrowest of Int8/16/32/64     |
//! | `boolean`                                     | `Boolean`                          |
//! | `array` of `object`                           | `List<Struct>` (item field `item`) |
//!
//! A field is nullable unless it is `required` and its `type` does not include `null`.
//! Property order in the file is column order. Each field carries its `description` as
//! Arrow metadata, so pyarrow users see the documentation next to the data.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::Value;

/// The JSON Schema text, embedded at build time.
pub const EVENT_SCHEMA_JSON: &str = include_str!("../json/dossier-event.v1.schema.json");

/// The time zone written into every timestamp column.
pub const UTC: &str = "UTC";

/// A schema file the derivation rules do not cover; a bug in the schema file, caught by
/// the tests before it can ship.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema file is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{path}: {reason}")]
    Unsupported { path: String, reason: String },
}

/// The parsed JSON Schema.
pub fn event_json_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        serde_json::from_str(EVENT_SCHEMA_JSON).expect("the embedded schema is tested to parse")
    })
}

/// The Arrow schema of the `events` table.
pub fn events_schema() -> SchemaRef {
    static ARROW: OnceLock<SchemaRef> = OnceLock::new();
    ARROW
        .get_or_init(|| {
            Arc::new(
                derive_arrow_schema(event_json_schema())
                    .expect("the embedded schema is tested to derive"),
            )
        })
        .clone()
}

/// The validator the `canonical` decoder checks input against, formats included.
pub fn event_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        jsonschema::options()
            .should_validate_formats(true)
            .build(event_json_schema())
            .expect("the embedded schema is tested to compile")
    })
}

/// The names of the top-level properties, for counting unknown fields on input.
pub fn event_property_names() -> Vec<&'static str> {
    event_json_schema()["properties"]
        .as_object()
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// Derive an Arrow schema from a JSON Schema object, by the rules in the module docs.
pub fn derive_arrow_schema(schema: &Value) -> Result<Schema, SchemaError> {
    let fields = object_fields(schema, "$")?;
    let mut meta = HashMap::new();
    if let Some(id) = schema.get("$id").and_then(Value::as_str) {
        meta.insert("sohoa.json_schema_id".to_owned(), id.to_owned());
    }
    Ok(Schema::new_with_metadata(fields, meta))
}

fn unsupported(path: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError::Unsupported {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn object_fields(schema: &Value, path: &str) -> Result<Fields, SchemaError> {
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| unsupported(path, "object without properties"))?;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    props
        .iter()
        .map(|(name, prop)| {
            let p = format!("{path}.{name}");
            let (types, data_type) = arrow_type(prop, &p)?;
            let nullable = types.contains(&"null") || !required.contains(&name.as_str());
            let mut field = Field::new(name, data_type, nullable);
            if let Some(d) = prop.get("description").and_then(Value::as_str) {
                field.set_metadata(HashMap::from([("description".to_owned(), d.to_owned())]));
            }
            Ok(field)
        })
        .collect()
}

/// The JSON types a property allows, and the Arrow type it maps to.
fn arrow_type<'v>(prop: &'v Value, path: &str) -> Result<(Vec<&'v str>, DataType), SchemaError> {
    let types: Vec<&str> = match prop.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Err(unsupported(path, "property without a type")),
    };
    let non_null: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
    let [ty] = non_null[..] else {
        return Err(unsupported(path, "exactly one non-null type is supported"));
    };
    let data_type = match ty {
        "string" if prop.get("format").and_then(Value::as_str) == Some("date-time") => {
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
        }
        "string" => DataType::Utf8,
        "boolean" => DataType::Boolean,
        "integer" => integer_type(prop, path)?,
        "array" => {
            let items = prop
                .get("items")
                .ok_or_else(|| unsupported(path, "array without items"))?;
            if items.get("type").and_then(Value::as_str) != Some("object") {
                return Err(unsupported(path, "only arrays of objects are supported"));
            }
            let fields = object_fields(items, &format!("{path}[]"))?;
            DataType::List(Arc::new(Field::new("item", DataType::Struct(fields), true)))
        }
        other => {
            return Err(unsupported(
                path,
                format!("type {other:?} has no Arrow mapping"),
            ))
        }
    };
    Ok((types, data_type))
}

/// The narrowest signed integer that holds the property's declared range. The bounds are
/// required: they document the field, and they decide its width.
fn integer_type(prop: &Value, path: &str) -> Result<DataType, SchemaError> {
    let bound = |k: &str| {
        prop.get(k)
            .and_then(Value::as_i64)
            .ok_or_else(|| unsupported(path, format!("integer without {k}")))
    };
    let (lo, hi) = (bound("minimum")?, bound("maximum")?);
    let fits = |min: i64, max: i64| lo >= min && hi <= max;
    Ok(if fits(i8::MIN.into(), i8::MAX.into()) {
        DataType::Int8
    } else if fits(i16::MIN.into(), i16::MAX.into()) {
        DataType::Int16
    } else if fits(i32::MIN.into(), i32::MAX.into()) {
        DataType::Int32
    } else {
        DataType::Int64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schema_derives_and_compiles() {
        let schema = events_schema();
        assert_eq!(
            schema.field_with_name("status_code").unwrap().data_type(),
            &DataType::Int8
        );
        assert_eq!(
            schema
                .field_with_name("schema_version")
                .unwrap()
                .data_type(),
            &DataType::Int16
        );
        assert_eq!(
            schema.field_with_name("source_offset").unwrap().data_type(),
            &DataType::Int64
        );
        assert!(!schema
            .field_with_name("dossier_code")
            .unwrap()
            .is_nullable());
        assert!(schema.field_with_name("agency_code").unwrap().is_nullable());
        assert_eq!(
            schema.field_with_name("event_time").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let _ = event_validator();
    }

    #[test]
    fn unsupported_shapes_are_reported_with_their_path() {
        let bad = serde_json::json!({"properties": {"x": {"type": "number"}}});
        let e = derive_arrow_schema(&bad).unwrap_err().to_string();
        assert!(e.starts_with("$.x:"), "{e}");
        let unbounded = serde_json::json!({"properties": {"n": {"type": "integer"}}});
        let e = derive_arrow_schema(&unbounded).unwrap_err().to_string();
        assert!(e.contains("integer without minimum"), "{e}");
    }
}
