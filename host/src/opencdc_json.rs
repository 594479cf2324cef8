//! Records as OpenCDC JSON, one per line: raw data and positions as base64 strings,
//! structured data as JSON objects, absent data as null (Conduit's encoding).

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use crate::wit::{Change, Data, Operation, Record};

pub fn to_json(r: &Record) -> Result<Value> {
    let metadata: Map<String, Value> = r
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Ok(json!({
        "position": B64.encode(&r.position),
        "operation": operation_name(r.operation),
        "metadata": metadata,
        "key": data_to_json(r.key.as_ref())?,
        "payload": {
            "before": data_to_json(r.payload.before.as_ref())?,
            "after": data_to_json(r.payload.after.as_ref())?,
        },
    }))
}

pub fn from_json(v: &Value) -> Result<Record> {
    let obj = v.as_object().context("a record must be a JSON object")?;
    let position = match obj.get("position") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => B64.decode(s).context("position is not base64")?,
        Some(_) => bail!("position must be a base64 string"),
    };
    let operation = match obj.get("operation").and_then(Value::as_str).unwrap_or("create") {
        "create" => Operation::Create,
        "update" => Operation::Update,
        "delete" => Operation::Delete,
        "snapshot" => Operation::Snapshot,
        other => bail!("operation {other:?} is not create, update, delete or snapshot"),
    };
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => bail!("metadata {k:?} must be a string"),
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!("metadata must be an object of strings"),
    };
    let payload = obj.get("payload").unwrap_or(&Value::Null);
    Ok(Record {
        position,
        operation,
        metadata,
        key: data_from_json(obj.get("key"), "key")?,
        payload: Change {
            before: data_from_json(payload.get("before"), "payload.before")?,
            after: data_from_json(payload.get("after"), "payload.after")?,
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

fn data_to_json(d: Option<&Data>) -> Result<Value> {
    Ok(match d {
        None => Value::Null,
        Some(Data::Raw(b)) => Value::String(B64.encode(b)),
        Some(Data::Structured(s)) => {
            serde_json::from_str(s).context("connector returned structured data that is not JSON")?
        }
    })
}

fn data_from_json(v: Option<&Value>, field: &str) -> Result<Option<Data>> {
    Ok(match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Data::Raw(
            B64.decode(s).with_context(|| format!("{field} is not base64"))?,
        )),
        Some(v @ Value::Object(_)) => Some(Data::Structured(v.to_string())),
        Some(_) => bail!("{field} must be a base64 string, a JSON object or null"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_raw_structured_and_null() {
        let line = r#"{"position":"cA==","operation":"update","metadata":{"a":"b"},"key":{"id":1},"payload":{"before":null,"after":"aGk="}}"#;
        let r = from_json(&serde_json::from_str(line).unwrap()).unwrap();
        assert_eq!(r.position, b"p");
        assert!(matches!(r.operation, Operation::Update));
        assert!(matches!(&r.key, Some(Data::Structured(s)) if s == r#"{"id":1}"#));
        assert!(matches!(&r.payload.after, Some(Data::Raw(b)) if b == b"hi"));
        assert!(r.payload.before.is_none());
        assert_eq!(to_json(&r).unwrap(), serde_json::from_str::<Value>(line).unwrap());
    }

    #[test]
    fn bad_input_names_the_field() {
        let bad = |s: &str| {
            from_json(&serde_json::from_str(s).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(bad(r#"{"key":"%%%"}"#).contains("key"));
        assert!(bad(r#"{"payload":{"after":5}}"#).contains("payload.after"));
        assert!(bad(r#"{"operation":"upsert"}"#).contains("upsert"));
        assert!(bad(r#"{"metadata":{"n":1}}"#).contains("\"n\""));
    }
}
