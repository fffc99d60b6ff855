//! Properties over generated input: whatever the bytes, a value is read or rejected, never a panic, and
//! the builders stay whole; valid rows read back exactly as they were written, however they are spelled.
//!
//! Case counts are bounded so the whole suite takes seconds; `PROPTEST_CASES` raises them for a longer run.

use proptest::prelude::*;

use super::{event, image, parse_one, EVENT};
use crate::builder::Builder;
use crate::read::{self, Column};

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Snippets that have broken JSON readers: escapes, lone surrogates, deep nesting, huge numbers, invalid
/// UTF-8, duplicate and escaped keys, non-JSON literals.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    let fixed: Vec<&'static [u8]> = vec![
        br#"\u0000"#,
        br#"\ud800"#,
        br#"\udc00"#,
        br#"\ud800\u0041"#,
        br#"\ud83d\ude80"#,
        br#"\""#,
        br#"\\"#,
        br#"\"#,
        b"\xff",
        b"\xc3",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\x00",
        br#""id":1,"#,
        br#""op":"c","#,
        br#""a\"b":1,"#,
        br#","a\u0022b":1"#,
        br#"{"a\"b":1}"#,
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"-0",
        b"1e999999",
        b"-1e-999999",
        b"0.0000000000000000000000000000000000000000001",
        b"null",
        b"true",
        b"[]",
        b"{}",
        b",",
        b":",
        b"\"",
        b"{",
        b"[",
    ];
    prop_oneof![
        proptest::sample::select(fixed).prop_map(<[u8]>::to_vec),
        (1usize..400).prop_map(|n| "9".repeat(n).into_bytes()),
        (100usize..300).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        (100usize..300)
            .prop_map(|n| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)).into_bytes()),
        (1usize..5000).prop_map(|n| format!("\"{}\"", "x".repeat(n)).into_bytes()),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, byte: u8 },
    Truncate { at: usize },
    Delete { at: usize, len: usize },
    Insert { at: usize, text: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0..EVENT.len();
    prop_oneof![
        (at.clone(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        at.clone().prop_map(|at| Mutation::Truncate { at }),
        (at.clone(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (at, hostile()).prop_map(|(at, text)| Mutation::Insert { at, text }),
    ]
}

fn mutate(value: &mut Vec<u8>, mutation: &Mutation) {
    let clamp = |at: usize, value: &Vec<u8>| at.min(value.len());
    match mutation {
        Mutation::Flip { at, byte } => {
            if let Some(slot) = value.get_mut(*at) {
                *slot = *byte;
            }
        }
        Mutation::Truncate { at } => value.truncate(*at),
        Mutation::Delete { at, len } => {
            let start = clamp(*at, value);
            let end = clamp(start + len, value);
            value.drain(start..end);
        }
        Mutation::Insert { at, text } => {
            let at = clamp(*at, value);
            value.splice(at..at, text.iter().copied());
        }
    }
}

/// Either outcome is fine: `parse_one` checks that the builders stayed whole.
fn read_or_rejected(node: &crate::spec::Node, value: &[u8]) {
    let (_either, _) = parse_one(node, value);
}

/// Reads `[EVENT, value, EVENT]` as one column: the value is read or rejected in place, the rows before
/// it kept whole, and reading goes on after it.
fn read_between_good_events(value: &[u8]) -> Result<(), TestCaseError> {
    let node = event();
    let mut data = EVENT.to_vec();
    let mut ends = vec![0i64, data.len() as i64];
    data.extend_from_slice(value);
    ends.push(data.len() as i64);
    data.extend_from_slice(EVENT);
    ends.push(data.len() as i64);
    let offsets: Vec<u8> = ends.iter().flat_map(|o| o.to_le_bytes()).collect();
    let column = Column::new(None, &offsets, &data, 0, 3).expect("a valid column");
    let rows = read::read(&node, Some(b"payload"), &column, 0, usize::MAX).expect("read");
    rows.root.assert_consistent();
    prop_assert_eq!(rows.root.rows(), rows.taken.len());
    match rows.rejected {
        None => prop_assert_eq!((rows.stop, rows.taken.len()), (3, 3)),
        Some(_) => {
            prop_assert_eq!((rows.stop, rows.taken.len()), (1, 1));
            let rest = read::read(&node, Some(b"payload"), &column, 2, usize::MAX).expect("read");
            prop_assert_eq!((rest.stop, rest.rejected, rest.taken), (3, None, vec![2]));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn arbitrary_bytes_are_read_or_rejected(value in proptest::collection::vec(any::<u8>(), 0..300)) {
        read_or_rejected(&event(), &value);
    }

    #[test]
    fn json_like_text_is_read_or_rejected(value in r#"\{[\[\]{}":,0-9a-zA-Z_\\ .eE+\-]{0,200}"#) {
        read_or_rejected(&event(), value.as_bytes());
        read_or_rejected(&image(true), value.as_bytes());
    }

    #[test]
    fn a_mutated_change_event_is_read_or_rejected(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let mut value = EVENT.to_vec();
        for mutation in &mutations {
            mutate(&mut value, mutation);
        }
        read_or_rejected(&event(), &value);
        read_between_good_events(&value)?;
    }
}

// --- round trips -------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Row {
    id: i64,
    name: String,
    qty: Option<i32>,
    ratio: f64,
    active: bool,
    /// decimal(12, 2), unscaled
    amount: i64,
    /// a {scale, value} decimal read as decimal(76, 10): (unscaled, scale)
    exact: (i64, u32),
    tags: Vec<Option<String>>,
}

fn row() -> impl Strategy<Value = Row> {
    let text =
        || proptest::string::string_regex(r#"(\PC|[\x00-\x1f"\\/\u{1F680}é])*"#).expect("regex");
    (
        any::<i64>(),
        text(),
        any::<Option<i32>>(),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        any::<bool>(),
        -999_999_999_999i64..=999_999_999_999,
        (any::<i64>(), 0u32..=10),
        proptest::collection::vec(proptest::option::of(text()), 0..4),
    )
        .prop_map(|(id, name, qty, ratio, active, amount, exact, tags)| Row {
            id,
            name,
            qty,
            ratio,
            active,
            amount,
            exact,
            tags,
        })
}

/// A JSON string, each character spelled as itself or escaped (the choice from `spelling`).
fn json_string(text: &str, spelling: &mut impl Iterator<Item = bool>) -> String {
    let mut out = String::from("\"");
    for ch in text.chars() {
        let escape = spelling.next().unwrap_or(false);
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if escape => out.push_str("\\/"),
            '\n' if escape => out.push_str("\\n"),
            c if (c as u32) < 0x20 || escape => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let word =
            chunk.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[(word >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn minimal_be(value: i64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (this, next) = (bytes[start], bytes[start + 1]);
        let redundant = (this == 0 && next & 0x80 == 0) || (this == 0xFF && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    bytes[start..].to_vec()
}

fn to_json(row: &Row, spelling: &mut impl Iterator<Item = bool>) -> String {
    let qty = row.qty.map_or("null".to_owned(), |q| q.to_string());
    let sign = if row.amount < 0 { "-" } else { "" };
    let amount = format!(
        "{sign}{}.{:02}",
        row.amount.unsigned_abs() / 100,
        row.amount.unsigned_abs() % 100
    );
    let tags: Vec<String> = row
        .tags
        .iter()
        .map(|t| {
            t.as_ref()
                .map_or("null".to_owned(), |t| json_string(t, spelling))
        })
        .collect();
    format!(
        r#"{{ "tags" : [{}], "id":{},"name":{},"qty":{qty},"ratio":{:?},"active":{},"amount":{amount},"exact":{{"scale":{},"value":"{}"}}}}"#,
        tags.join(","),
        row.id,
        json_string(&row.name, spelling),
        row.ratio,
        row.active,
        row.exact.1,
        base64(&minimal_be(row.exact.0)),
    )
}

pub(crate) fn child(root: &Builder, index: usize) -> &Builder {
    match root {
        Builder::Struct { children, .. } => &children[index],
        _ => panic!("a struct"),
    }
}

fn text_at(builder: &Builder, row: usize) -> String {
    match builder {
        Builder::Str { offsets, data, .. } => {
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            String::from_utf8(data[start..end].to_vec()).expect("UTF-8")
        }
        _ => panic!("a string"),
    }
}

pub(crate) fn decimal_at(builder: &Builder, row: usize) -> i128 {
    match builder {
        Builder::Decimal { data, width, .. } => {
            let bytes = &data[row * width..(row + 1) * width];
            let low = i128::from_le_bytes(bytes[..16].try_into().expect("16 bytes"));
            let extension = if low < 0 { 0xFF } else { 0 };
            assert!(bytes[16..].iter().all(|b| *b == extension), "sign-extended");
            low
        }
        _ => panic!("a decimal"),
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn valid_rows_read_back_exactly(row in row(), spelling in proptest::collection::vec(any::<bool>(), 64)) {
        let mut spelling = spelling.into_iter().cycle();
        let json = to_json(&row, &mut spelling);
        let (outcome, root) = parse_one(&image(true), json.as_bytes());
        prop_assert_eq!(outcome, Ok(()), "{}", json);
        match child(&root, 0) {
            Builder::Int { values, .. } => prop_assert_eq!(values[0], row.id),
            _ => panic!("an int"),
        }
        prop_assert_eq!(text_at(child(&root, 1), 0), row.name.clone());
        match child(&root, 2) {
            Builder::Int { values, .. } => {
                prop_assert_eq!(child(&root, 2).is_valid(0), row.qty.is_some());
                prop_assert_eq!(values[0], i64::from(row.qty.unwrap_or(0)));
            }
            _ => panic!("an int"),
        }
        match child(&root, 3) {
            Builder::Float { values, .. } => prop_assert_eq!(values[0].to_bits(), row.ratio.to_bits()),
            _ => panic!("a float"),
        }
        match child(&root, 4) {
            Builder::Bool { values, .. } => prop_assert_eq!(values[0], row.active),
            _ => panic!("a bool"),
        }
        prop_assert_eq!(decimal_at(child(&root, 5), 0), i128::from(row.amount));
        let exact = i128::from(row.exact.0) * 10i128.pow(10 - row.exact.1);
        prop_assert_eq!(decimal_at(child(&root, 6), 0), exact);
        match child(&root, 8) {
            Builder::List { item, offsets, .. } => {
                prop_assert_eq!(offsets[1] as usize, row.tags.len());
                for (index, tag) in row.tags.iter().enumerate() {
                    prop_assert_eq!(item.is_valid(index), tag.is_some());
                    prop_assert_eq!(text_at(item, index), tag.clone().unwrap_or_default());
                }
            }
            _ => panic!("a list"),
        }
    }
}
