//! The reader reads or rejects, never panics: the cases found so far, and properties over generated
//! and mutated input (`properties`). These run without Python: everything below `Reader` is plain Rust.

mod properties;

use crate::builder::Builder;
use crate::decimal::Magnitude;
use crate::parse;
use crate::read::{self, Column};
use crate::spec::Node;

pub(crate) fn decimal(precision: u32, scale: u32, width: usize, variable_scale: bool) -> Node {
    Node::Decimal {
        precision,
        scale,
        width,
        variable_scale,
        limit: Magnitude::pow10(precision).expect("a supported precision"),
    }
}

fn field(name: &str, node: Node) -> (Vec<u8>, Node) {
    (name.as_bytes().to_vec(), node)
}

/// A table's row image as the decoder's wire schema has it.
pub(crate) fn image(strict: bool) -> Node {
    Node::Struct {
        fields: vec![
            field("id", Node::Int { bits: 64 }),
            field("name", Node::Str),
            field("qty", Node::Int { bits: 32 }),
            field("ratio", Node::Float { bits: 64 }),
            field("active", Node::Bool),
            field("amount", decimal(12, 2, 16, false)),
            field("exact", decimal(76, 10, 32, true)),
            field("updated_at", Node::TimestampMicros),
            field("tags", Node::List(Box::new(Node::Str))),
            field(
                "attrs",
                Node::Struct {
                    fields: vec![field("k", Node::Str), field("v", Node::Int { bits: 16 })],
                    strict: false,
                },
            ),
        ],
        strict,
    }
}

/// A Debezium change event: strict row images, a lenient source block.
pub(crate) fn event() -> Node {
    Node::Struct {
        fields: vec![
            field("before", image(true)),
            field("after", image(true)),
            field(
                "source",
                Node::Struct {
                    fields: vec![
                        field("ts_ms", Node::Int { bits: 64 }),
                        field("lsn", Node::Int { bits: 64 }),
                        field("txId", Node::Int { bits: 64 }),
                        field("snapshot", Node::Str),
                    ],
                    strict: false,
                },
            ),
            field("op", Node::Str),
            field("ts_ms", Node::Int { bits: 64 }),
        ],
        strict: false,
    }
}

/// An update as Kafka Connect's JsonConverter writes it with schemas enabled (the schema shortened).
pub(crate) const EVENT: &[u8] = r#"{"schema":{"type":"struct","fields":[{"type":"struct","optional":true,"field":"before"}],"optional":false,"name":"shop.public.orders.Envelope"},"payload":{"before":{"id":41,"name":"caf\u00e9 \"old\"","qty":-3,"ratio":0.25,"active":false,"amount":12.50,"exact":{"scale":2,"value":"BNI="},"updated_at":"2024-02-29T23:59:59.999999Z","tags":[],"attrs":null},"after":{"id":41,"name":"café \"new\" 🚀","qty":7,"ratio":-1.5e-3,"active":true,"amount":1234567890.12,"exact":{"scale":-3,"value":"/w=="},"updated_at":"2026-11-23T08:00:00+05:30","tags":["a","b\\c",null],"attrs":{"k":"x","v":-32768,"extra":[1,{"n":null}]}},"source":{"version":"3.4.3.Final","connector":"postgresql","name":"shop","ts_ms":1764600000000,"snapshot":"false","db":"shop","schema":"public","table":"orders","txId":7781,"lsn":24023128,"xmin":null},"op":"u","ts_ms":1764600000123,"transaction":null}}"#.as_bytes();

/// Reads `value` as one record of `node`; the builder must agree with itself whatever the outcome.
pub(crate) fn parse_one(node: &Node, value: &[u8]) -> (Result<(), String>, Builder) {
    let mut root = Builder::new(node);
    let outcome = parse::record(value, node, Some(b"payload"), &mut root);
    if outcome.is_err() {
        root.truncate(0);
    }
    root.assert_consistent();
    assert_eq!(root.rows(), usize::from(outcome.is_ok()));
    (outcome, root)
}

fn rejection(node: &Node, value: &[u8]) -> String {
    parse_one(node, value).0.expect_err("the value is rejected")
}

#[test]
fn the_real_event_reads() {
    let (outcome, root) = parse_one(&event(), EVENT);
    assert_eq!(outcome, Ok(()));
    assert!(root.is_valid(0));
}

#[test]
fn an_unknown_escaped_key_in_a_strict_struct_is_rejected_by_its_name() {
    let node = event();
    // The first object teaches the reader its key order; the next has an unknown key with an escape
    // one past the keys remembered (this indexed past the end of the remembered keys and panicked).
    let mut root = Builder::new(&node);
    let first = br#"{"after":{"id":1}}"#;
    assert_eq!(parse::record(first, &node, None, &mut root), Ok(()));
    for (value, name) in [
        (&br#"{"after":{"id":1,"a\"b":2}}"#[..], r#""a\"b""#),
        (br#"{"after":{"x\u0041":2}}"#, r#""xA""#),
        (br#"{"after":{"id":1,"name":"n","\u00e9":3}}"#, r#""é""#),
    ] {
        let outcome = parse::record(value, &node, None, &mut root);
        assert_eq!(outcome, Err(format!("unknown key {name}")));
        root.truncate(1);
        root.assert_consistent();
    }
}

#[test]
fn nesting_deeper_than_the_limit_is_rejected_on_every_path() {
    let deep = |open: &str, close: &str, levels: usize| {
        format!("{}1{}", open.repeat(levels), close.repeat(levels))
    };
    let node = event();
    let arrays = deep("[", "]", 20_000);
    let objects = deep("{\"a\":", "}", 20_000);
    // where any JSON may be: checked and skipped, as deep as the limit allows
    for value in [
        format!(r#"{{"unknown":{arrays}}}"#),
        format!(r#"{{"source":{{"x":{objects}}}}}"#),
        format!(r#"{{"after":{{"attrs":{{"x":{arrays}}}}}}}"#),
        format!(r#"{{"schema":{arrays},"payload":{{}}}}"#),
        format!(r#"{{"schema":{{}},"payload":{{}},"x":{objects}}}"#),
    ] {
        let reason = rejection(&node, value.as_bytes());
        assert_eq!(reason, "nested deeper than 128 levels");
    }
    // where the schema says what comes: rejected at the first level the schema does not have
    for value in [
        format!(r#"{{"after":{{"tags":{arrays}}}}}"#),
        format!(r#"{{"after":{{"exact":{{"scale":{objects}}}}}}}"#),
        format!(r#"{{"after":{{"attrs":{objects}}}}}"#),
    ] {
        rejection(&node, value.as_bytes());
    }
    // up to the limit is fine
    let shallow = format!(r#"{{"unknown":{}}}"#, deep("[", "]", 120));
    assert_eq!(parse_one(&node, shallow.as_bytes()).0, Ok(()));
}

#[test]
fn numbers_beyond_every_width_are_rejected() {
    let node = event();
    for value in [
        format!(r#"{{"ts_ms":{}}}"#, "9".repeat(5_000)),
        r#"{"ts_ms":9223372036854775808}"#.to_owned(),
        r#"{"ts_ms":-9223372036854775809}"#.to_owned(),
        r#"{"after":{"qty":2147483648}}"#.to_owned(),
        r#"{"after":{"ratio":1e400}}"#.to_owned(),
        format!(r#"{{"after":{{"amount":{}}}}}"#, "1".repeat(4_000)),
        format!(r#"{{"after":{{"amount":0.{}}}}}"#, "1".repeat(4_000)),
        r#"{"after":{"amount":1e2}}"#.to_owned(),
        r#"{"after":{"exact":{"scale":-2147483648,"value":"AQ=="}}}"#.to_owned(),
        r#"{"after":{"exact":{"scale":2147483647,"value":"AQ=="}}}"#.to_owned(),
        r#"{"after":{"exact":{"scale":-71,"value":"AQ=="}}}"#.to_owned(),
        r#"{"after":{"exact":{"scale":1297587212,"value":"AQ=="}}}"#.to_owned(),
        format!(
            r#"{{"after":{{"exact":{{"scale":0,"value":"{}"}}}}}}"#,
            "A".repeat(48)
        ),
        r#"{"after":{"updated_at":"99999-01-01T00:00:00Z"}}"#.to_owned(),
        r#"{"after":{"updated_at":"2024-02-30T00:00:00Z"}}"#.to_owned(),
    ] {
        rejection(&node, value.as_bytes());
    }
    // the extremes that fit are read
    let fits = r#"{"ts_ms":-9223372036854775808,"after":{"qty":-2147483648,"exact":{"scale":-65,"value":"AQ=="}}}"#;
    assert_eq!(parse_one(&node, fits.as_bytes()).0, Ok(()));
}

#[test]
fn a_decimal_string_is_read_when_it_holds_only_a_number() {
    let node = event();
    let read = |amount: &str| {
        let value = format!(r#"{{"after":{{"amount":{amount}}}}}"#);
        let (outcome, root) = parse_one(&node, value.as_bytes());
        outcome
            .map(|()| properties::decimal_at(properties::child(properties::child(&root, 1), 5), 0))
    };
    for (text, unscaled) in [
        (r#""12.5""#, 1250),
        (r#""-0.05""#, -5),
        (r#""0""#, 0),
        (r#""-0""#, 0),
        (r#""9999999999.99""#, 999_999_999_999),
    ] {
        assert_eq!(read(text), Ok(unscaled), "{text}");
        assert_eq!(
            read(text.trim_matches('"')),
            Ok(unscaled),
            "the number {text}"
        );
    }
    for text in [
        r#""+1""#,
        r#""01""#,
        r#"".5""#,
        r#""5.""#,
        r#"" 1""#,
        r#""1 ""#,
        r#""1e2""#,
        r#""1.234""#,
        r#""10000000000""#,
        r#""\u0031""#,
        r#""1\u0030""#,
        r#""""#,
        r#""NaN""#,
        r#""12.5"#,
    ] {
        assert!(read(text).is_err(), "{text} is left to Arrow's reader");
    }
}

#[test]
fn escapes_and_invalid_text_are_rejected_cleanly() {
    let node = event();
    for value in [
        &br#"{"op":"\ud800"}"#[..],
        br#"{"op":"\udc00\ud800"}"#,
        br#"{"op":"\ud800\u0041"}"#,
        br#"{"op":"\ud800\"#,
        br#"{"op":"\u12"}"#,
        br#"{"op":"\x"}"#,
        br#"{"op":"\"#,
        b"{\"op\":\"\xff\"}",
        b"{\"op\":\"\xc3\"}",
        b"{\"op\":\"\xed\xa0\x80\"}", // a surrogate in UTF-8
        b"{\"op\":\"\x01\"}",
        b"{\"a\xff\":1}",
        br#"{"after":{"\ud800":1}}"#,
        br#"{"after":{"id":1,"id":2}}"#,
        br#"{"op":"u","op":"c"}"#,
    ] {
        rejection(&node, value);
    }
}

#[test]
fn every_truncation_of_the_event_is_rejected() {
    let node = event();
    for end in 0..EVENT.len() {
        let (outcome, _) = parse_one(&node, &EVENT[..end]);
        assert!(outcome.is_err(), "a prefix of {end} bytes was read");
    }
}

fn column_of(values: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
    let mut offsets = vec![0i64];
    let mut data = Vec::new();
    for value in values {
        data.extend_from_slice(value);
        offsets.push(data.len() as i64);
    }
    let offsets = offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
    (offsets, data)
}

fn offsets_of(offsets: &[i64]) -> Vec<u8> {
    offsets.iter().flat_map(|o| o.to_le_bytes()).collect()
}

#[test]
fn buffers_that_do_not_hold_their_values_are_refused() {
    let data = br#"{"op":"c"}{"op":"u"}"#;
    let good = offsets_of(&[0, 10, 20]);
    assert!(Column::new(None, &good, data, 0, 2).is_some());
    assert!(Column::new(Some(&[0b11]), &good, data, 0, 2).is_some());
    for (offsets, offset, len) in [
        (offsets_of(&[0, 10, 3]), 0, 2),   // out of order
        (offsets_of(&[0, 10, 99]), 0, 2),  // past the data
        (offsets_of(&[0, -5, 20]), 0, 2),  // negative
        (offsets_of(&[0, 10]), 0, 2),      // missing
        (good.clone(), 1, 2),              // the slice runs past the buffers
        (good.clone(), usize::MAX, 1),     // offset + len overflows
        (good.clone(), usize::MAX / 8, 1), // (offset + len + 1) * 8 overflows
        (good.clone(), 0, usize::MAX),
    ] {
        assert!(Column::new(None, &offsets, data, offset, len).is_none());
    }
    assert!(Column::new(Some(&[]), &good, data, 0, 2).is_none()); // a bitmap too short
}

#[test]
fn a_panic_on_a_value_rejects_it_and_keeps_the_rows_before() {
    let node = event();
    let values: [&[u8]; 4] = [
        br#"{"op":"c"}"#,
        br#"{"op":"u"}"#,
        br#"{"op":"BOOM"}"#,
        br#"{"op":"d"}"#,
    ];
    let (offsets, data) = column_of(&values);
    let column = Column::new(None, &offsets, &data, 0, values.len()).expect("a valid column");
    // a parser that has half-filled the builders when it panics
    let rows = read::read_with(&node, &column, 0, usize::MAX, |bytes, root| {
        let outcome = parse::record(bytes, &node, None, root);
        if bytes.windows(4).any(|w| w == b"BOOM") {
            root.push_null();
            panic!("a bug met on {}", String::from_utf8_lossy(bytes));
        }
        outcome
    })
    .expect("the rows before are read again");
    assert_eq!(rows.stop, 2);
    assert_eq!(rows.taken, vec![0, 1]);
    let reason = rows.rejected.expect("the value is rejected");
    assert!(
        reason.starts_with("the native reader failed on this value: a bug met on"),
        "{reason}"
    );
    assert_eq!(rows.root.rows(), 2);
    rows.root.assert_consistent();
    // the next call goes on after it
    let rest = read::read(&node, None, &column, 3, usize::MAX).expect("read");
    assert_eq!((rest.stop, rest.rejected, rest.taken), (4, None, vec![3]));
}

#[test]
fn a_value_over_the_limit_and_nulls_are_handled_before_parsing() {
    let node = event();
    let values: [&[u8]; 3] = [br#"{"op":"c"}"#, b"", br#"{"op":"uuuuuuuuuuuuuuuuuu"}"#];
    let (offsets, data) = column_of(&values);
    let column = Column::new(Some(&[0b101]), &offsets, &data, 0, 3).expect("a valid column");
    let rows = read::read(&node, None, &column, 0, 12).expect("read");
    assert_eq!((rows.stop, rows.taken), (2, vec![0]));
    assert!(rows
        .rejected
        .expect("rejected")
        .contains("exceeds the 12-byte limit"));
    // a start past the end reads nothing
    let none = read::read(&node, None, &column, 7, 12).expect("read");
    assert_eq!((none.stop, none.rejected, none.taken.len()), (7, None, 0));
}

fn floats_of(builder: &Builder) -> &[f64] {
    match builder {
        Builder::Float { values, .. } => values,
        _ => panic!("a float column"),
    }
}

#[test]
fn a_floats_nan_and_infinities_read_as_kafka_connect_writes_them() {
    let node = image(true);
    let ratio = 3; // the float field of `image`
    for (text, expected) in [
        ("\"NaN\"", f64::NAN),
        ("\"Infinity\"", f64::INFINITY),
        ("\"-Infinity\"", f64::NEG_INFINITY),
    ] {
        let value = format!(r#"{{"id":1,"ratio":{text}}}"#);
        let (outcome, root) = parse_one(&node, value.as_bytes());
        assert_eq!(outcome, Ok(()), "{text}");
        let Builder::Struct { children, .. } = &root else {
            panic!("a struct")
        };
        let read = floats_of(&children[ratio])[0];
        assert!(
            read == expected || (read.is_nan() && expected.is_nan()),
            "{text}: {read}"
        );
    }
    // only those spellings: any other string, or a bare word, is still no float
    for text in [
        "\"nan\"",
        "\"inf\"",
        "\"+Infinity\"",
        "\"NaN \"",
        "\"\\u004eaN\"",
        "NaN",
        "Infinity",
    ] {
        let value = format!(r#"{{"id":1,"ratio":{text}}}"#);
        rejection(&node, value.as_bytes());
    }
}
