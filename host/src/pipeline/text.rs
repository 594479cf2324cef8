//! Records as text for people (`read --format text`): one line each, as kcat's `-f` prints
//! them, data as UTF-8 where it is valid and escaped where not (`escape::shown_data`).

use connector_format::RecordView;

use crate::escape::shown_data;

/// Appends `r` as one line: `TOPIC [PARTITION] @ OFFSET` (`-` for what its metadata lacks),
/// then, each after a tab, `key: KEY` and `value: VALUE` (each left out when null) and
/// `header NAME: VALUE` per Kafka header. Data cannot hold a tab or a newline unescaped,
/// so a tab always begins a field and a newline always ends the record.
pub fn write_line(r: &impl RecordView, out: &mut Vec<u8>) {
    let mut line = String::new();
    let meta = |key: &str| r.metadata().find(|(k, _)| *k == key).map(|(_, v)| v);
    let at = |line: &mut String, key: &str| match meta(key) {
        Some(v) => shown_data(v.as_bytes(), &[], line),
        None => line.push('-'),
    };
    at(&mut line, "opencdc.collection");
    line.push_str(" [");
    at(&mut line, "kafka.partition");
    line.push_str("] @ ");
    at(&mut line, "kafka.offset");
    for (label, data) in [("key", r.key()), ("value", r.after())] {
        if let Some(d) = data {
            line.push_str(&format!("\t{label}: "));
            shown_data(d.as_bytes(), &[], &mut line);
        }
    }
    for (name, value) in r
        .metadata()
        .filter_map(|(k, v)| Some((k.strip_prefix("kafka.header.")?, v)))
    {
        line.push_str("\theader ");
        shown_data(name.as_bytes(), &[':'], &mut line);
        line.push_str(": ");
        shown_data(value.as_bytes(), &[], &mut line);
    }
    line.push('\n');
    out.extend_from_slice(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use connector_format::{Data, Operation, Record};

    use super::*;

    fn line(r: &Record) -> String {
        let mut out = Vec::new();
        write_line(r, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn record(key: Option<Data>, after: Option<Data>, metadata: &[(&str, &str)]) -> Record {
        Record {
            position: vec![1],
            operation: Operation::Create,
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            key,
            before: None,
            after,
        }
    }

    #[test]
    fn a_kafka_record_is_one_line_of_its_place_key_value_and_headers() {
        let r = record(
            Some(Data::Raw(b"user-1".to_vec())),
            Some(Data::Raw(b"caf\xc3\xa9 \xff\x00".to_vec())),
            &[
                ("opencdc.collection", "orders"),
                ("kafka.partition", "2"),
                ("kafka.offset", "41"),
                ("opencdc.readAt", "1"),
                ("kafka.header.trace:id", "ab\ncd"),
            ],
        );
        assert_eq!(
            line(&r),
            "orders [2] @ 41\tkey: user-1\tvalue: café \\xff\\x00\theader trace\\x3aid: ab\\ncd\n"
        );
    }

    #[test]
    fn null_data_is_left_out_and_missing_places_are_dashes() {
        let r = record(None, Some(Data::Structured("{\"n\":1}".into())), &[]);
        assert_eq!(line(&r), "- [-] @ -\tvalue: {\"n\":1}\n");
        assert_eq!(line(&record(None, None, &[])), "- [-] @ -\n");
    }

    #[test]
    fn no_data_can_forge_a_second_line_or_field() {
        let forged = "x\norders [0] @ 1\tkey: forged\r\u{2028}";
        let r = record(
            Some(Data::Raw(forged.as_bytes().to_vec())),
            Some(Data::Raw(forged.as_bytes().to_vec())),
            &[("opencdc.collection", forged), ("kafka.header.h", forged)],
        );
        let text = line(&r);
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.ends_with('\n') && !text.contains('\r'), "{text}");
        // The fields: the place, key, value and one header; none of the forged ones.
        assert_eq!(text.matches('\t').count(), 3, "{text}");
    }
}
