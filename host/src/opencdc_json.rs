//! Records as OpenCDC JSON, one per line: raw data and positions as base64 strings,
//! structured data as JSON objects, absent data as null (Conduit's encoding).
//!
//! Structured data is checked and carried as text, never built into a tree: a tree of a
//! JSON text can take tens of times its size, and the text comes from tenants.

use std::borrow::Cow;
use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::wit::{Change, Data, Operation, Record};

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
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DataOut::Null => s.serialize_none(),
            DataOut::Base64(b) => s.serialize_str(b),
            DataOut::Json(raw) => raw.serialize(s),
        }
    }
}

/// Appends `r` to `out` as one JSON line (with its newline).
pub fn write_line(r: &Record, out: &mut Vec<u8>) -> Result<()> {
    let line = RecordOut {
        position: B64.encode(&r.position),
        operation: operation_name(r.operation),
        metadata: r.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        key: data_out(r.key.as_ref())?,
        payload: PayloadOut {
            before: data_out(r.payload.before.as_ref())?,
            after: data_out(r.payload.after.as_ref())?,
        },
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.push(b'\n');
    Ok(())
}

fn data_out(d: Option<&Data>) -> Result<DataOut> {
    Ok(match d {
        None => DataOut::Null,
        Some(Data::Raw(b)) => DataOut::Base64(B64.encode(b)),
        Some(Data::Structured(s)) => {
            let raw = RawValue::from_string(compact(s).into_owned())
                .context("connector returned structured data that is not JSON")?;
            DataOut::Json(raw)
        }
    })
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

/// Reads one JSON line into a record.
pub fn read_line(line: &[u8]) -> Result<Record> {
    let r: RecordIn = serde_json::from_slice(line).context("a record must be a JSON object")?;
    let position = match r.position {
        None => Vec::new(),
        Some(s) => B64.decode(s.as_bytes()).context("position is not base64")?,
    };
    let operation = match r.operation.as_deref().unwrap_or("create") {
        "create" => Operation::Create,
        "update" => Operation::Update,
        "delete" => Operation::Delete,
        "snapshot" => Operation::Snapshot,
        other => bail!("operation {other:?} is not create, update, delete or snapshot"),
    };
    let metadata = r
        .metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            _ => bail!("metadata {k:?} must be a string"),
        })
        .collect::<Result<_>>()?;
    let (before, after) = r.payload.map_or((None, None), |p| (p.before, p.after));
    Ok(Record {
        position,
        operation,
        metadata,
        key: data_in(r.key, "key")?,
        payload: Change {
            before: data_in(before, "payload.before")?,
            after: data_in(after, "payload.after")?,
        },
    })
}

fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "create",
        Operation::Update => "update",
        Operation::Delete => "delete",
        Operation::Snapshot => "snapshot",
    }
}

fn data_in(v: Option<&RawValue>, field: &str) -> Result<Option<Data>> {
    let Some(v) = v else { return Ok(None) };
    let text = v.get();
    Ok(match text.as_bytes().first() {
        Some(b'n') => None,
        Some(b'"') => {
            let s: Cow<str> = serde_json::from_str(text)?;
            Some(Data::Raw(
                B64.decode(s.as_bytes())
                    .with_context(|| format!("{field} is not base64"))?,
            ))
        }
        Some(b'{') => Some(Data::Structured(compact(text).into_owned())),
        _ => bail!("{field} must be a base64 string, a JSON object or null"),
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
        let r = read_line(text.as_bytes()).unwrap();
        assert_eq!(r.position, b"p");
        assert!(matches!(r.operation, Operation::Update));
        assert!(matches!(&r.key, Some(Data::Structured(s)) if s == r#"{"id":1}"#));
        assert!(matches!(&r.payload.after, Some(Data::Raw(b)) if b == b"hi"));
        assert!(r.payload.before.is_none());
        assert_eq!(line(&r), format!("{text}\n"));
    }

    #[test]
    fn structured_data_is_kept_as_compact_text_on_one_line() {
        let spaced = "{ \"a\" : [1, 2],\n \"b\": \"x y\\\" z\" }";
        let r = read_line(format!("{{\"key\":{spaced}}}").as_bytes()).unwrap();
        assert!(matches!(&r.key, Some(Data::Structured(s)) if s == r#"{"a":[1,2],"b":"x y\" z"}"#));
        let mut r = r;
        r.payload.after = Some(Data::Structured(spaced.into()));
        let out = line(&r);
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert!(out.contains(r#""after":{"a":[1,2],"b":"x y\" z"}"#), "{out}");
        r.payload.after = Some(Data::Structured("{not json".into()));
        let mut buf = Vec::new();
        let e = write_line(&r, &mut buf).unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
    }

    #[test]
    fn bad_input_names_the_field() {
        let bad = |s: &str| format!("{:#}", read_line(s.as_bytes()).unwrap_err());
        assert!(bad(r#"{"key":"%%%"}"#).contains("key"));
        assert!(bad(r#"{"payload":{"after":5}}"#).contains("payload.after"));
        assert!(bad(r#"{"operation":"upsert"}"#).contains("upsert"));
        assert!(bad(r#"{"metadata":{"n":1}}"#).contains("\"n\""));
        assert!(bad("[1]").contains("JSON object"));
    }
}
