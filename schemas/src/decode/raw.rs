//! Lenient, zero-copy JSON shapes for source records.
//!
//! Serde's typed decoding is fast, but a type mismatch fails the whole message without
//! saying where. Here every field is captured as a [`Raw`] value that accepts any JSON
//! shape, strings borrow from the message bytes, and the decoders then check each field
//! with its full path. A value of the wrong shape becomes a precise error for one record,
//! not a lost envelope. Unknown keys are skipped and counted; known keys that carry
//! personal data are skipped without ever being stored.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::scan::{Reader, Scan};
use crate::error::Reason;
use crate::normalize::{Warning, Warnings};

/// Any JSON value, with strings borrowed where the input has no escapes.
#[derive(Debug, Default, Clone, PartialEq)]
pub enum Raw<'a> {
    #[default]
    Missing,
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl<'a> Raw<'a> {
    pub fn from_u64(v: u64) -> Self {
        i64::try_from(v).map_or(Raw::Float(v as f64), Raw::Int)
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, Raw::Missing)
    }

    /// The same value, with a borrowed string copied.
    pub fn into_owned(self) -> Raw<'static> {
        match self {
            Raw::Missing => Raw::Missing,
            Raw::Null => Raw::Null,
            Raw::Bool(b) => Raw::Bool(b),
            Raw::Int(i) => Raw::Int(i),
            Raw::Float(f) => Raw::Float(f),
            Raw::Str(s) => Raw::Str(Cow::Owned(s.into_owned())),
            Raw::Array => Raw::Array,
            Raw::Object => Raw::Object,
        }
    }

    /// How the value reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Raw::Missing => "nothing".into(),
            Raw::Null => "null".into(),
            Raw::Bool(b) => b.to_string(),
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
            Raw::Str(s) => {
                let short: String = s.chars().take(60).collect();
                if short.len() < s.len() {
                    format!("{short:?}…")
                } else {
                    format!("{short:?}")
                }
            }
            Raw::Array => "an array".into(),
            Raw::Object => "an object".into(),
        }
    }

    fn wrong(&self, expected: &'static str) -> Reason {
        Reason::WrongType {
            found: self.describe(),
            expected,
        }
    }

    /// A string field. Numbers are accepted (codes sometimes arrive as numbers) with a
    /// [`Warning::Coerced`]; null and missing are `None`.
    pub fn text(self, w: &mut Warnings) -> Result<Option<Cow<'a, str>>, Reason> {
        match self {
            Raw::Missing | Raw::Null => Ok(None),
            Raw::Str(s) => Ok(Some(s)),
            Raw::Int(i) => {
                w.add(Warning::Coerced);
                Ok(Some(Cow::Owned(i.to_string())))
            }
            other => Err(other.wrong("a string")),
        }
    }

    /// An integer field. Integral floats and numeric strings are accepted with a
    /// [`Warning::Coerced`]; null, missing and the empty string are `None`.
    pub fn int(&self, w: &mut Warnings) -> Result<Option<i64>, Reason> {
        match self {
            Raw::Missing | Raw::Null => Ok(None),
            Raw::Int(i) => Ok(Some(*i)),
            Raw::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                w.add(Warning::Coerced);
                Ok(Some(*f as i64))
            }
            Raw::Str(s) if s.trim().is_empty() => Ok(None),
            Raw::Str(s) => match s.trim().parse::<i64>() {
                Ok(i) => {
                    w.add(Warning::Coerced);
                    Ok(Some(i))
                }
                Err(_) => Err(self.wrong("an integer")),
            },
            _ => Err(self.wrong("an integer")),
        }
    }

    /// A number that may have a fraction (fees).
    pub fn number(&self, w: &mut Warnings) -> Result<Option<f64>, Reason> {
        match self {
            Raw::Float(f) => Ok(Some(*f)),
            Raw::Str(s) if !s.trim().is_empty() => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => {
                    w.add(Warning::Coerced);
                    Ok(Some(f))
                }
                _ => Err(self.wrong("a number")),
            },
            _ => self.int(w).map(|i| i.map(|i| i as f64)),
        }
    }

    /// A yes/no flag: `true`/`false`, `1`/`0`, or those as strings. Absent means no.
    pub fn flag(&self, w: &mut Warnings) -> Result<bool, Reason> {
        match self {
            Raw::Missing | Raw::Null => Ok(false),
            Raw::Bool(b) => Ok(*b),
            Raw::Int(0) => Ok(false),
            Raw::Int(1) => Ok(true),
            Raw::Str(s) => match s.trim() {
                "" | "0" | "false" | "False" => Ok(false),
                "1" | "true" | "True" => {
                    w.add(Warning::Coerced);
                    Ok(true)
                }
                _ => Err(self.wrong("a flag (0 or 1)")),
            },
            _ => Err(self.wrong("a flag (0 or 1)")),
        }
    }

    /// A date string, parsed by [`crate::normalize::time`].
    pub fn time(&self, w: &mut Warnings) -> Result<Option<i64>, Reason> {
        match self {
            Raw::Missing | Raw::Null => Ok(None),
            Raw::Str(s) => crate::normalize::time(s, w),
            _ => Err(self.wrong("a date string")),
        }
    }
}

struct RawVisitor;

impl<'a> Visitor<'a> for RawVisitor {
    type Value = Raw<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw<'a>, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw<'a>, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw<'a>, E> {
        Ok(Raw::from_u64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw<'a>, E> {
        Ok(Raw::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'a str) -> Result<Raw<'a>, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw<'a>, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw<'a>, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Raw<'a>, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw<'a>, E> {
        Ok(Raw::Null)
    }
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<Raw<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Raw::Array)
    }
    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Raw<'a>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Object)
    }
}

impl<'a> Deserialize<'a> for Raw<'a> {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

/// A list field: absent, null, not a list at all, or its items.
#[derive(Debug, Default)]
pub enum RawList<T> {
    #[default]
    Missing,
    Null,
    NotArray(Raw<'static>),
    Items(Vec<T>),
}

impl<T> RawList<T> {
    pub fn is_missing(&self) -> bool {
        matches!(self, RawList::Missing)
    }

    /// The items; absent and null are an empty list, anything else is an error.
    pub fn items(self) -> Result<Vec<T>, Reason> {
        match self {
            RawList::Missing | RawList::Null => Ok(Vec::new()),
            RawList::Items(v) => Ok(v),
            RawList::NotArray(r) => Err(Reason::WrongType {
                found: r.describe(),
                expected: "an array",
            }),
        }
    }
}

impl<'a, T: Deserialize<'a>> Deserialize<'a> for RawList<T> {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'a, T: Deserialize<'a>> Visitor<'a> for V<T> {
            type Value = RawList<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<RawList<T>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawList::Items(items))
            }
            fn visit_unit<E>(self) -> Result<RawList<T>, E> {
                Ok(RawList::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawList<T>, E> {
                Ok(RawList::NotArray(Raw::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawList<T>, E> {
                Ok(RawList::NotArray(Raw::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawList<T>, E> {
                Ok(RawList::NotArray(Raw::from_u64(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawList<T>, E> {
                Ok(RawList::NotArray(Raw::Float(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawList<T>, E> {
                Ok(RawList::NotArray(Raw::Str(Cow::Owned(v.to_owned()))))
            }
            fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<RawList<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RawList::NotArray(Raw::Object))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'a, T: Scan<'a>> Scan<'a> for RawList<T> {
    fn scan(r: &mut Reader<'a>) -> Option<Self> {
        match r.peek()? {
            b'[' => r.list().map(RawList::Items),
            b'n' => Raw::scan(r).map(|_| RawList::Null),
            _ => Raw::scan(r).map(|v| RawList::NotArray(v.into_owned())),
        }
    }
}

/// A map key, borrowed when it has no escapes.
pub struct Key<'a>(pub Cow<'a, str>);

impl<'a> Deserialize<'a> for Key<'a> {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'a> Visitor<'a> for V {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'a str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Declares a lenient object: named fields captured raw, `skip` keys dropped unread
/// (personal data and fields sohoa does not use), any other key counted as unknown.
/// A non-object value in its place is remembered in `not_object`.
macro_rules! raw_object {
    (
        $(#[$m:meta])*
        $name:ident {
            $($key:literal => $field:ident : $ty:ty,)*
        }
        skip [$($skip:literal),* $(,)?]
    ) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name<'a> {
            $(pub $field: $ty,)*
            /// Keys this decoder does not know.
            pub unknown: u32,
            /// Set when the JSON value was not an object at all.
            pub not_object: Option<crate::decode::raw::Raw<'a>>,
        }

        impl<'a> $name<'a> {
            #[allow(unused_mut)]
            pub fn from_map<A: serde::de::MapAccess<'a>>(mut map: A) -> Result<Self, A::Error> {
                let mut out = Self::default();
                while let Some(key) = map.next_key::<crate::decode::raw::Key<'a>>()? {
                    match &*key.0 {
                        $($key => out.$field = map.next_value()?,)*
                        $($skip)|* => { map.next_value::<serde::de::IgnoredAny>()?; }
                        _ => {
                            out.unknown += 1;
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }

        // The same reading as `from_map` and the serde visitor below, by the fast reader.
        impl<'a> crate::decode::scan::Scan<'a> for $name<'a> {
            fn scan(r: &mut crate::decode::scan::Reader<'a>) -> Option<Self> {
                use crate::decode::scan::Scan;
                let mut out = Self::default();
                if r.peek()? != b'{' {
                    out.not_object = Some(crate::decode::raw::Raw::scan(r)?);
                    return Some(out);
                }
                // The fields by their index in NAMES, which lists them first and the
                // skipped keys after them.
                #[allow(non_camel_case_types)]
                #[derive(Clone, Copy)]
                enum Field { $($field,)* }
                const FIELDS: &[Field] = &[$(Field::$field,)*];
                const NAMES: &[&[u8]] = &[
                    $(concat!("\"", $key, "\"").as_bytes(),)*
                    $(concat!("\"", $skip, "\"").as_bytes(),)*
                ];
                const _: () = assert!(NAMES.len() <= crate::decode::scan::KeyOrder::MAX_NAMES);
                static ORDER: crate::decode::scan::KeyOrder = crate::decode::scan::KeyOrder::new();
                r.fields(NAMES, &ORDER, |r, index| {
                    match index.map(|i| FIELDS.get(i)) {
                        $(Some(Some(Field::$field)) => out.$field = Scan::scan(r)?,)*
                        Some(None) => r.skip()?,
                        None => {
                            out.unknown += 1;
                            r.skip()?;
                        }
                    }
                    Some(())
                })?;
                Some(out)
            }
        }

        impl<'a> serde::Deserialize<'a> for $name<'a> {
            fn deserialize<D: serde::Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'a> serde::de::Visitor<'a> for V {
                    type Value = $name<'a>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'a>>(self, map: A) -> Result<$name<'a>, A::Error> {
                        $name::from_map(map)
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'a>>(self, mut seq: A) -> Result<$name<'a>, A::Error> {
                        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                        Ok($name { not_object: Some(crate::decode::raw::Raw::Array), ..Default::default() })
                    }
                    fn visit_bool<E>(self, v: bool) -> Result<$name<'a>, E> {
                        Ok($name { not_object: Some(crate::decode::raw::Raw::Bool(v)), ..Default::default() })
                    }
                    fn visit_i64<E>(self, v: i64) -> Result<$name<'a>, E> {
                        Ok($name { not_object: Some(crate::decode::raw::Raw::Int(v)), ..Default::default() })
                    }
                    fn visit_u64<E>(self, v: u64) -> Result<$name<'a>, E> {
                        Ok($name { not_object: Some(crate::decode::raw::Raw::from_u64(v)), ..Default::default() })
                    }
                    fn visit_f64<E>(self, v: f64) -> Result<$name<'a>, E> {
                        Ok($name { not_object: Some(crate::decode::raw::Raw::Float(v)), ..Default::default() })
                    }
                    fn visit_str<E>(self, v: &str) -> Result<$name<'a>, E> {
                        Ok($name { not_object: Some(crate::decode::raw::Raw::Str(v.to_owned().into())), ..Default::default() })
                    }
                    fn visit_unit<E>(self) -> Result<$name<'a>, E> {
                        Ok($name { not_object: Some(crate::decode::raw::Raw::Null), ..Default::default() })
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

pub(crate) use raw_object;

#[cfg(test)]
mod tests {
    use super::*;

    raw_object! {
        Probe {
            "A" => a: Raw<'a>,
            "L" => l: RawList<Raw<'a>>,
        }
        skip ["Secret"]
    }

    #[test]
    fn strings_borrow_and_unknown_keys_are_counted() {
        let json = br#"{"A":"x","Secret":"do not keep","Zzz":1,"L":[1,"b",null]}"#;
        let p: Probe = serde_json::from_slice(json).unwrap();
        assert!(!format!("{p:?}").contains("do not keep"));
        assert!(matches!(p.a, Raw::Str(Cow::Borrowed("x"))));
        assert_eq!(p.unknown, 1);
        assert_eq!(
            p.l.items().unwrap(),
            vec![Raw::Int(1), Raw::Str("b".into()), Raw::Null]
        );
    }

    #[test]
    fn wrong_shapes_are_captured_not_fatal() {
        let mut p: Vec<Probe> = serde_json::from_slice(br#"[5, {"L": {"x":1}}, "s"]"#).unwrap();
        assert_eq!(p[0].not_object, Some(Raw::Int(5)));
        assert_eq!(p[2].not_object, Some(Raw::Str("s".into())));
        let err = std::mem::take(&mut p[1].l).items().unwrap_err();
        assert_eq!(err.to_string(), "an object is not an array");
    }

    #[test]
    fn lenient_scalars() {
        let mut w = Warnings::default();
        assert_eq!(Raw::Str(" 2 ".into()).int(&mut w), Ok(Some(2)));
        assert_eq!(Raw::Float(3.0).int(&mut w), Ok(Some(3)));
        assert!(Raw::Float(3.5).int(&mut w).is_err());
        assert!(Raw::Str("abc".into()).int(&mut w).is_err());
        assert_eq!(Raw::Str("".into()).int(&mut w), Ok(None));
        assert_eq!(Raw::Bool(true).flag(&mut w), Ok(true));
        assert_eq!(Raw::Int(0).flag(&mut w), Ok(false));
        assert!(Raw::Int(7).flag(&mut w).is_err());
        assert_eq!(w.get(Warning::Coerced), 2);
    }
}
