use super::*;
use crate::record::{Data, Record};

/// Two records by hand: the first a create with a raw key and after and one metadata
/// entry, the second an update with a structured before and the second entry.
fn numbers() -> Buffers {
    let bytes = b"p1p2kv".to_vec();
    let text = "topicaé".to_string();
    let metadata = vec![0, 5, 5, 1, 0, 5, 5, 3];
    let records = vec![
        0, 2, 0, 0, 1, 1, 4, 1, 0, 0, 0, 1, 5, 1, //
        2, 2, 1, 1, 1, 0, 0, 0, 2, 5, 1, 0, 0, 0,
    ];
    Buffers {
        bytes,
        text,
        metadata,
        records,
    }
}

fn check(n: &Buffers, bounds: &Bounds) -> Result<Vec<Record>> {
    Batch::check(&n.bytes, &n.text, &n.metadata, &n.records, bounds)
        .map(|b| b.iter().map(|r| r.to_record()).collect())
}

fn error(n: &Buffers) -> String {
    check(n, &Bounds::NONE).unwrap_err().0
}

#[test]
fn records_are_views_into_the_buffers() {
    let n = numbers();
    let b = Batch::check(&n.bytes, &n.text, &n.metadata, &n.records, &Bounds::NONE).unwrap();
    assert_eq!(b.len(), 2);
    let r = b.get(1).unwrap();
    assert_eq!(r.position(), b"p2");
    assert_eq!(r.metadata_value("topic"), Some("aé"));
    assert_eq!(
        (r.metadata_value("topi"), r.metadata_value("topics")),
        (None, None)
    );
    assert_eq!(r.before(), Some(DataRef::Structured("a")));
    assert_eq!(
        check(&n, &Bounds::NONE).unwrap(),
        [
            Record {
                position: b"p1".to_vec(),
                operation: Operation::Create,
                metadata: vec![("topic".into(), "a".into())],
                key: Some(Data::Raw(b"k".to_vec())),
                before: None,
                after: Some(Data::Raw(b"v".to_vec())),
            },
            Record {
                position: b"p2".to_vec(),
                operation: Operation::Update,
                metadata: vec![("topic".into(), "aé".into())],
                key: None,
                before: Some(Data::Structured("a".into())),
                after: None,
            },
        ]
    );
}

#[test]
fn built_records_come_back_whole_and_pass_the_checks() {
    let records = check(&numbers(), &Bounds::NONE).unwrap();
    let mut b = Builder::default();
    records.iter().for_each(|r| b.push(r));
    assert_eq!(b.len(), 2);
    let n = b.finish().unwrap();
    assert_eq!(check(&n, &Bounds::NONE).unwrap(), records);
    let empty = Builder::default().finish().unwrap();
    assert!(check(&empty, &Bounds::NONE).unwrap().is_empty());
}

#[test]
fn shared_text_and_replaced_values_pack_by_span() {
    let mut b = Builder::default();
    let key = b.add_text("k");
    let (v1, v2) = (b.add_text("1"), b.add_text("2"));
    let first = b.entries();
    b.add_entry(key, v1);
    b.set_entry_value(first, v2);
    assert_eq!(b.text_of(b.entry_key(first).unwrap()), Some("k"));
    let position = b.add_bytes_of(&[b"po", b"s"]);
    let after = b.add_text_of(&["{", "}"]);
    b.add_record(&PackedSpans {
        position,
        operation: Operation::Create,
        metadata: Span { start: first, len: 1 },
        key: None,
        before: None,
        after: Some(Value::Structured(after)),
    });
    let got = check(&b.finish().unwrap(), &Bounds::NONE).unwrap();
    assert_eq!(got[0].position, b"pos");
    assert_eq!(got[0].metadata, [("k".to_string(), "2".to_string())]);
    assert_eq!(got[0].after, Some(Data::Structured("{}".into())));
}

#[test]
fn a_bad_number_is_an_error_naming_the_record_and_field() {
    let bad = |i: usize, v: u32| {
        let mut n = numbers();
        n.records[i] = v;
        error(&n)
    };
    assert!(
        bad(RECORD + POSITION, 5)
            .contains("record 1 of a batch whose position at 5+2 lies outside its 6 bytes")
    );
    assert!(bad(OPERATION, 7).contains("record 0 of a batch whose operation is 7"));
    assert!(bad(METADATA + 1, u32::MAX).contains("metadata entries 0+4294967295"));
    assert!(bad(RECORD + METADATA, 2).contains("metadata entries 2+1 lie outside the batch's 2"));
    assert!(bad(AFTER, 3).contains("after is of kind 3"));
    assert!(bad(KEY + 1, u32::MAX).contains("key at 4294967295+1"));
    assert!(bad(RECORD + BEFORE + 2, 9).contains("before at 5+9"));
    let mut n = numbers();
    n.metadata[6] = 6;
    assert!(
        error(&n).contains("metadata entry 1 of a batch whose value at 6+3"),
        "splits é"
    );
    let mut n = numbers();
    n.records.pop();
    assert!(error(&n).contains("not 14 per record"));
    let mut n = numbers();
    n.metadata.pop();
    assert!(error(&n).contains("4 per entry"));
}

#[test]
fn more_records_than_asked_or_overlapping_spans_past_the_bound_are_refused() {
    let n = numbers();
    let at = |records, bytes| check(&n, &Bounds { records, bytes });
    // Two records of 8 + 6 + 7 bytes counted as copied, and two metadata entries.
    let cost = (21 + 2 * RECORD_COST + 2 * ENTRY_COST) as usize;
    assert!(at(2, cost).is_ok());
    assert_eq!(at(1, cost).unwrap_err().0, "2 records, more than the 1 asked for");
    assert!(at(2, cost - 1).unwrap_err().0.contains("expand to more than"));
    // Records that all point at one long run of empty metadata entries.
    let mut n = numbers();
    n.metadata = vec![0; ENTRY * 100_000];
    for r in n.records.chunks_exact_mut(RECORD) {
        r[METADATA..METADATA + 2].copy_from_slice(&[0, 100_000]);
    }
    let e = check(
        &n,
        &Bounds {
            records: 2,
            bytes: 1 << 20,
        },
    )
    .unwrap_err();
    assert!(e.0.contains("expand to more than 1 MiB"), "{e}");
    // A thousand records whose spans all cover one buffer: small, but huge once copied.
    let bytes = vec![0; 1 << 20];
    let one = [0, 1 << 20, 0, 0, 0, 1, 0, 1 << 20, 0, 0, 0, 1, 0, 1 << 20];
    let records: Vec<u32> = one.iter().copied().cycle().take(RECORD * 1000).collect();
    let bounds = Bounds {
        records: 1000,
        bytes: 256 << 20,
    };
    let e = Batch::check(&bytes, "", &[], &records, &bounds).unwrap_err();
    assert!(e.0.contains("expand to more than 256 MiB"), "{e}");
}

#[test]
fn operations_keep_their_codes_and_names() {
    for (code, name) in ["create", "update", "delete", "snapshot"].iter().enumerate() {
        let op = Operation::from_code(code as u32).unwrap();
        assert_eq!((op.code(), op.name()), (code as u32, *name));
        assert_eq!(Operation::from_name(name), Some(op));
    }
    assert_eq!(Operation::from_code(4), None);
    assert_eq!(Operation::from_name("upsert"), None);
}
