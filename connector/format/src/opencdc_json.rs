//! Records as OpenCDC JSON, Conduit's encoding: raw data and the position as base64
//! strings, structured data as JSON objects, absent data as null. One record is one line
//! of JSON Lines (no newline inside).
//!
//! Structured data is checked and carried as text, never built into a tree: a tree of a
//! JSON text can take tens of times its size, and the text comes from tenants. Structured
//! data that is not a JSON object is an error naming the field, on both ways.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::record::{Data, DataRef, Operation, Record, RecordView};
use crate::{Error, Result};

#[derive(Serialize)]
struct RecordOut<'a> {
    position: String,
    operation: &'static str,
    metadata: BTreeMap<&'a str, &'a str>,
    key: DataOut,
    payload: PayloadOut,
}

#[derive(Serialize)]
struct PayloadOut {
    before: DataOut,
    after: DataOut,
}

/// A key or payload value as written: null, base64 text, or the JSON object as it is.
enum DataOut {
    Null,
    Base64(String),
    Json(Box<RawValue>),
}

impl Serialize for DataOut {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            DataOut::Null => s.serialize_none(),
            DataOut::Base64(b) => s.serialize_str(b),
            DataOut::Json(raw) => raw.serialize(s),
        }
    }
}

/// Appends `r` to `out` as one JSON text, without a newline. On an error `out` is as it
/// was.
pub fn write(r: &impl RecordView, out: &mut Vec<u8>) -> Result<()> {
    let record = RecordOut {
        position: B64.encode(r.position()),
        operation: r.operation().name(),
        metadata: r.metadata().collect(),
        key: data_out(r.key(), "key")?,
        payload: PayloadOut {
            before: data_out(r.before(), "payload.before")?,
            after: data_out(r.after(), "payload.after")?,
        },
    };
    serde_json::to_writer(out, &record).map_err(|e| Error(format!("writing JSON: {e}")))
}

/// Appends `r` to `out` as one line of JSON Lines, with its newline.
pub fn write_line(r: &impl RecordView, out: &mut Vec<u8>) -> Result<()> {
    write(r, out)?;
    out.push(b'\n');
    Ok(())
}

fn data_out(d: Option<DataRef<'_>>, field: &str) -> Result<DataOut> {
    Ok(match d {
        None => DataOut::Null,
        Some(DataRef::Raw(b)) => DataOut::Base64(B64.encode(b)),
        Some(DataRef::Structured(s)) => DataOut::Json(object(s, field)?),
    })
}

/// `s` as a compact JSON object, or an error naming `field`.
fn object(s: &str, field: &str) -> Result<Box<RawValue>> {
    let not = || Error(format!("{field} is structured data that is not a JSON object"));
    let raw = RawValue::from_string(compact(s).into_owned()).map_err(|_| not())?;
    if !raw.get().starts_with('{') {
        return Err(not());
    }
    Ok(raw)
}

#[derive(Deserialize)]
struct RecordIn<'a> {
    #[serde(default, borrow)]
    position: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    operation: Option<Cow<'a, str>>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, borrow)]
    key: Option<&'a RawValue>,
    #[serde(default, borrow)]
    payload: Option<PayloadIn<'a>>,
}

#[derive(Deserialize)]
struct PayloadIn<'a> {
    #[serde(default, borrow)]
    before: Option<&'a RawValue>,
    #[serde(default, borrow)]
    after: Option<&'a RawValue>,
}

/// Reads one JSON text (a line without its newline, or with it) into a record. Every
/// field may be left out: no position, `create`, no metadata, null data.
pub fn read(text: &[u8]) -> Result<Record> {
    let r: RecordIn =
        serde_json::from_slice(text).map_err(|e| Error(format!("a record must be a JSON object: {e}")))?;
    let position = match r.position {
        None => Vec::new(),
        Some(s) => B64
            .decode(s.as_bytes())
            .map_err(|e| Error(format!("position is not base64: {e}")))?,
    };
    let name = r.operation.as_deref().unwrap_or("create");
    let operation = Operation::from_name(name).ok_or_else(|| {
        Error(format!(
            "operation {name:?} is not create, update, delete or snapshot"
        ))
    })?;
    let metadata = r
        .metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            _ => Err(Error(format!("metadata {k:?} must be a string"))),
        })
        .collect::<Result<_>>()?;
    let (before, after) = r.payload.map_or((None, None), |p| (p.before, p.after));
    Ok(Record {
        position,
        operation,
        metadata,
        key: data_in(r.key, "key")?,
        before: data_in(before, "payload.before")?,
        after: data_in(after, "payload.after")?,
    })
}

fn data_in(v: Option<&RawValue>, field: &str) -> Result<Option<Data>> {
    let Some(v) = v else { return Ok(None) };
    let text = v.get();
    Ok(match text.as_bytes().first() {
        Some(b'n') => None,
        Some(b'"') => {
            let s: Cow<str> = serde_json::from_str(text).map_err(|e| Error(format!("{field}: {e}")))?;
            let b = B64
                .decode(s.as_bytes())
                .map_err(|e| Error(format!("{field} is not base64: {e}")))?;
            Some(Data::Raw(b))
        }
        Some(b'{') => Some(Data::Structured(compact(text).into_owned())),
        _ => {
            return Err(Error(format!(
                "{field} must be a base64 string, a JSON object or null"
            )));
        }
    })
}

/// JSON text without the whitespace between its tokens (a valid JSON text stays valid; a
/// line of JSON Lines must not hold a newline).
fn compact(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b.is_ascii_whitespace()) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in s.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            c if !in_string && c.is_ascii_whitespace() => continue,
            _ => {}
        }
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: &Record) -> String {
        let mut out = Vec::new();
        write_line(r, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn round_trips_raw_structured_and_null() {
        let text = r#"{"position":"cA==","operation":"update","metadata":{"a":"b"},"key":{"id":1},"payload":{"before":null,"after":"aGk="}}"#;
        let r = read(text.as_bytes()).unwrap();
        assert_eq!(r.position, b"p");
        assert_eq!(r.operation, Operation::Update);
        assert_eq!(r.key, Some(Data::Structured(r#"{"id":1}"#.into())));
        assert_eq!(r.after, Some(Data::Raw(b"hi".to_vec())));
        assert_eq!(r.before, None);
        assert_eq!(line(&r), format!("{text}\n"));
        let defaults = read(b"{}\n").unwrap();
        assert_eq!(
            (defaults.operation, defaults.position.len()),
            (Operation::Create, 0)
        );
    }

    #[test]
    fn structured_data_is_kept_as_compact_text_on_one_line() {
        let spaced = "{ \"a\" : [1, 2],\n \"b\": \"x y\\\" z\" }";
        let mut r = read(format!("{{\"key\":{spaced}}}").as_bytes()).unwrap();
        assert_eq!(
            r.key,
            Some(Data::Structured(r#"{"a":[1,2],"b":"x y\" z"}"#.into()))
        );
        r.after = Some(Data::Structured(spaced.into()));
        let out = line(&r);
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert!(out.contains(r#""after":{"a":[1,2],"b":"x y\" z"}"#), "{out}");
    }

    #[test]
    fn structured_data_that_is_no_json_object_is_an_error_naming_the_field() {
        for bad in ["{not json", "[1]", "\"s\"", ""] {
            let mut r = read(b"{}").unwrap();
            r.before = Some(Data::Structured(bad.into()));
            let mut out = b"kept".to_vec();
            let e = write_line(&r, &mut out).unwrap_err();
            assert_eq!(e.0, "payload.before is structured data that is not a JSON object");
            assert_eq!(out, b"kept", "nothing written on an error");
        }
    }

    #[test]
    fn bad_input_names_the_field() {
        let bad = |s: &str| read(s.as_bytes()).unwrap_err().0;
        assert!(bad(r#"{"key":"%%%"}"#).contains("key is not base64"));
        assert!(bad(r#"{"payload":{"after":5}}"#).contains("payload.after must be"));
        assert!(bad(r#"{"operation":"upsert"}"#).contains("upsert"));
        assert!(bad(r#"{"metadata":{"n":1}}"#).contains("\"n\""));
        assert!(bad("[1]").contains("JSON object"));
    }
}
