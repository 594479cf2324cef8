//! Kafka error codes turned into the connector's typed errors.

use kafka_protocol::error::ResponseError;

use crate::error::{Error, Result};

/// `Ok` for error code 0, else the typed error; `context` says which request and which
/// topic or partition answered it.
pub fn check(code: i16, context: &str) -> Result<()> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(e) => Err(kafka_error(e, context)),
    }
}

pub fn kafka_error(e: ResponseError, context: &str) -> Error {
    let name = upper_snake(&e.to_string());
    let error = Error::Kafka {
        code: e.code(),
        message: format!("{context}: {name}"),
        name,
        retriable: e.is_retriable(),
    };
    match e {
        ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge => {
            Error::RecordTooLarge(format!("{context}: the broker refused it ({error})"))
        }
        _ => error,
    }
}

/// `NotLeaderOrFollower` → `NOT_LEADER_OR_FOLLOWER`, the spelling Kafka's docs use.
fn upper_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_become_named_typed_errors() {
        assert!(check(0, "x").is_ok());
        match check(6, "Produce t-0").unwrap_err() {
            Error::Kafka {
                code,
                name,
                retriable,
                message,
            } => {
                assert_eq!(
                    (code, name.as_str(), retriable),
                    (6, "NOT_LEADER_OR_FOLLOWER", true)
                );
                assert!(message.starts_with("Produce t-0"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(check(10, "p"), Err(Error::RecordTooLarge(_))));
        assert!(matches!(
            check(3, "p"),
            Err(Error::Kafka {
                code: 3,
                retriable: true,
                ..
            })
        ));
        assert!(matches!(
            check(29, "p"),
            Err(Error::Kafka { retriable: false, .. })
        ));
        assert!(matches!(check(-9999, "p"), Err(Error::Kafka { code: -9999, .. })));
    }
}
