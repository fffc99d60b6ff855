//! One JSON value → the builders of its field tree, in a single pass over its bytes.

use std::borrow::Cow;

use crate::builder::{catch_up, Builder, Key};
use crate::decimal::{self, Magnitude};
use crate::spec::Node;

/// Deeper nesting than this is rejected rather than risking the stack on hostile input.
const MAX_DEPTH: usize = 128;

/// The key order remembered per object (a hostile object with more keys is matched the slow way).
const MAX_SHAPE: usize = 256;

type Parsed<T> = Result<T, String>;

/// Parses one value — a JSON object and nothing else but whitespace — into `root`.
///
/// With an `envelope` key, an object whose first key is `"schema"` is a wrapper: its `schema` is checked
/// and skipped, and the object under the envelope key is the row.
pub fn record(
    value: &[u8],
    node: &Node,
    envelope: Option<&[u8]>,
    root: &mut Builder,
) -> Parsed<()> {
    let mut cursor = Cursor {
        bytes: value,
        pos: 0,
    };
    cursor.skip_ws();
    if cursor.peek() != Some(b'{') {
        return Err("the value is not a JSON object".to_owned());
    }
    match envelope {
        Some(key) if cursor.first_key_is(b"schema") => unwrap_into(&mut cursor, key, node, root)?,
        _ => value_into(&mut cursor, node, root, 0)?,
    }
    cursor.skip_ws();
    if cursor.pos != value.len() {
        return Err(format!(
            "unexpected data after the object at byte {}",
            cursor.pos
        ));
    }
    Ok(())
}

/// The wrapper object at the cursor: every key but `key` is checked and skipped; `key` holds the row.
fn unwrap_into(cursor: &mut Cursor<'_>, key: &[u8], node: &Node, root: &mut Builder) -> Parsed<()> {
    let mut found = false;
    cursor.items(1, |cursor| {
        let name = cursor.key()?;
        cursor.colon()?;
        if *name != *key {
            return cursor.skip_value(1);
        }
        if found || cursor.peek() != Some(b'{') {
            let key = String::from_utf8_lossy(key);
            return Err(format!("the envelope's {key:?} is not one object"));
        }
        found = true;
        value_into(cursor, node, root, 1)
    })?;
    if !found {
        return Err(format!(
            "the envelope has no {:?}",
            String::from_utf8_lossy(key)
        ));
    }
    Ok(())
}

fn value_into(
    cursor: &mut Cursor<'_>,
    node: &Node,
    builder: &mut Builder,
    depth: usize,
) -> Parsed<()> {
    cursor.skip_ws();
    let Some(first) = cursor.peek() else {
        return Err(cursor.eof());
    };
    if first == b'n' {
        cursor.literal(b"null")?;
        builder.push_null();
        return Ok(());
    }
    match (node, &mut *builder) {
        (Node::Bool, Builder::Bool { values, .. }) => match first {
            b't' => values.push(cursor.literal(b"true").map(|()| true)?),
            b'f' => values.push(cursor.literal(b"false").map(|()| false)?),
            _ => return Err(cursor.mismatch(node)),
        },
        (Node::Int { bits }, Builder::Int { values, .. }) => {
            values.push(cursor.integer(node, *bits)?)
        }
        (Node::Float { bits }, Builder::Float { values, .. }) => {
            values.push(cursor.float(node, *bits)?)
        }
        (Node::TimestampMicros, Builder::Int { values, .. }) => {
            if first != b'"' {
                return Err(cursor.mismatch(node));
            }
            values.push(cursor.timestamp_micros()?);
        }
        (
            Node::Decimal {
                variable_scale: false,
                ..
            },
            Builder::Decimal { data, .. },
        ) => {
            cursor.decimal(node, data)?;
        }
        (
            Node::Decimal {
                variable_scale: true,
                ..
            },
            Builder::Decimal { data, .. },
        ) => {
            if first != b'{' {
                return Err(cursor.mismatch(node));
            }
            cursor.variable_scale_decimal(node, data, depth + 1)?;
        }
        (Node::Str, Builder::Str { offsets, data, .. }) => {
            if first != b'"' {
                return Err(cursor.mismatch(node));
            }
            cursor.string(Some(data))?;
            let end = i32::try_from(data.len())
                .map_err(|_| "more than 2 GiB of text in one batch".to_owned())?;
            offsets.push(end);
        }
        (
            Node::List(item),
            Builder::List {
                offsets,
                item: items,
                ..
            },
        ) => {
            if first != b'[' {
                return Err(cursor.mismatch(node));
            }
            let count = list_into(cursor, item, items, depth + 1)?;
            let end = offsets.last().copied().unwrap_or(0) as usize + count;
            offsets.push(
                i32::try_from(end)
                    .map_err(|_| "more than 2^31 list items in one batch".to_owned())?,
            );
        }
        (
            Node::Struct { fields, strict },
            Builder::Struct {
                children,
                shape,
                deferred,
                ..
            },
        ) => {
            if first != b'{' {
                return Err(cursor.mismatch(node));
            }
            catch_up(children, deferred);
            object_into(cursor, fields, *strict, children, shape, depth + 1)?;
        }
        _ => unreachable!("builders are made from the same field tree"),
    }
    builder.mark_valid();
    Ok(())
}

fn list_into(
    cursor: &mut Cursor<'_>,
    item: &Node,
    items: &mut Builder,
    depth: usize,
) -> Parsed<usize> {
    let mut count = 0;
    cursor.items(depth, |cursor| {
        count += 1;
        value_into(cursor, item, items, depth)
    })?;
    Ok(count)
}

fn object_into(
    cursor: &mut Cursor<'_>,
    fields: &[(Vec<u8>, Node)],
    strict: bool,
    children: &mut [Builder],
    shape: &mut Vec<Key>,
    depth: usize,
) -> Parsed<()> {
    let mut seen = Seen::new(fields.len());
    // The keys skipped so far: a key given twice is refused wherever it is, as Arrow's reader refuses it,
    // so a record is read or refused alike whichever reader its batch gives it to.
    let mut skipped: Vec<Cow<'_, [u8]>> = Vec::new();
    let mut position = 0;
    cursor.items(depth, |cursor| {
        let start = cursor.pos;
        // The key the last object had here, compared in place with its quotes and colon: one comparison
        // instead of a scan for the closing quote and the colon.
        let (index, key) = match shape.get(position) {
            Some(cached) if cursor.token_is(&cached.token) => (cached.field, None),
            _ => {
                let key = cursor.key()?;
                let end = cursor.colon()?;
                let index = fields.iter().position(|(name, _)| same(name, &key));
                if let Cow::Borrowed(name) = key {
                    // only keys without escapes: the fast path compares the raw bytes
                    let cached = Key {
                        token: cursor.bytes[start..end].to_vec(),
                        name_len: name.len(),
                        field: index,
                    };
                    if position < shape.len() {
                        shape[position] = cached;
                    } else if position == shape.len() && position < MAX_SHAPE {
                        shape.push(cached);
                    }
                }
                (index, Some(key))
            }
        };
        match index {
            Some(index) => {
                if seen.insert(index) {
                    let name = String::from_utf8_lossy(&fields[index].0);
                    return Err(format!("duplicate key {name:?}"));
                }
                value_into(cursor, &fields[index].1, &mut children[index], depth)?;
            }
            None if strict => {
                // the key was read here, or matched the one remembered at this position
                let name = match &key {
                    Some(key) => &key[..],
                    None => shape.get(position).map_or(&[][..], Key::name),
                };
                return Err(format!("unknown key {:?}", String::from_utf8_lossy(name)));
            }
            None => {
                // the key read here, or the remembered one matched in place (its name follows the quote)
                let name = key.unwrap_or_else(|| {
                    let length = shape.get(position).map_or(0, |cached| cached.name_len);
                    Cow::Borrowed(&cursor.bytes[start + 1..start + 1 + length])
                });
                if skipped.contains(&name) {
                    return Err(format!(
                        "duplicate key {:?}",
                        String::from_utf8_lossy(&name)
                    ));
                }
                skipped.push(name);
                cursor.skip_value(depth)?;
            }
        }
        position += 1;
        Ok(())
    })?;
    for (index, child) in children.iter_mut().enumerate() {
        if !seen.contains(index) {
            child.push_null(); // an absent key is a null, as in Arrow's own JSON reader
        }
    }
    Ok(())
}

/// Which fields of an object were given.
enum Seen {
    Few(u64),
    Many(Vec<bool>),
}

impl Seen {
    fn new(fields: usize) -> Seen {
        if fields <= 64 {
            Seen::Few(0)
        } else {
            Seen::Many(vec![false; fields])
        }
    }

    /// Records `index`; true when it was already there.
    fn insert(&mut self, index: usize) -> bool {
        match self {
            Seen::Few(mask) => {
                let bit = 1u64 << index;
                let was = *mask & bit != 0;
                *mask |= bit;
                was
            }
            Seen::Many(flags) => std::mem::replace(&mut flags[index], true),
        }
    }

    fn contains(&self, index: usize) -> bool {
        match self {
            Seen::Few(mask) => *mask & (1u64 << index) != 0,
            Seen::Many(flags) => flags[index],
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek();
        self.pos += 1;
        byte
    }

    /// Whether the object at the cursor starts with `name` (the cursor does not move).
    fn first_key_is(&self, name: &[u8]) -> bool {
        let rest = self.bytes.get(self.pos + 1..).unwrap_or_default();
        let start = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
        start.is_some_and(|start| {
            let rest = &rest[start..];
            rest.first() == Some(&b'"')
                && rest[1..].starts_with(name)
                && rest.get(name.len() + 1) == Some(&b'"')
        })
    }

    /// The items of the array or object at the cursor, each read by `item` (from its first byte), with
    /// the commas and the closing bracket checked.
    #[inline]
    fn items(&mut self, depth: usize, mut item: impl FnMut(&mut Self) -> Parsed<()>) -> Parsed<()> {
        self.enter(depth)?;
        let (close, wanted) = match self.next() {
            Some(b'[') => (b']', "',' or ']'"),
            _ => (b'}', "',' or '}'"),
        };
        self.skip_ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            item(self)?;
            self.skip_ws();
            match self.next() {
                Some(b',') => {}
                Some(byte) if byte == close => return Ok(()),
                _ => return Err(self.unexpected(wanted)),
            }
        }
    }

    /// The colon after a key, and the whitespace around it; returns where the colon ended.
    #[inline]
    fn colon(&mut self) -> Parsed<usize> {
        self.skip_ws();
        if self.next() != Some(b':') {
            return Err(self.unexpected("':'"));
        }
        let end = self.pos;
        self.skip_ws();
        Ok(end)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn enter(&self, depth: usize) -> Parsed<()> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn eof(&self) -> String {
        "unexpected end of the value".to_owned()
    }

    /// The byte just consumed was not what the grammar wanted.
    fn unexpected(&self, wanted: &str) -> String {
        let at = self.pos - 1;
        if at >= self.bytes.len() {
            self.eof()
        } else {
            format!("expected {wanted} at byte {at}")
        }
    }

    fn mismatch(&self, node: &Node) -> String {
        format!("expected {} at byte {}", node.expects(), self.pos)
    }

    fn literal(&mut self, word: &[u8]) -> Parsed<()> {
        let end = self.pos + word.len();
        if self
            .bytes
            .get(self.pos..end)
            .is_some_and(|text| same(text, word))
        {
            self.pos += word.len();
            Ok(())
        } else {
            Err(format!("invalid literal at byte {}", self.pos))
        }
    }

    /// A JSON string at the cursor; its unescaped bytes go to `out` when given.
    ///
    /// Outside strings the grammar admits only ASCII, so checking UTF-8 here, where a string has a byte
    /// above 0x7F, checks the whole value.
    fn string(&mut self, mut out: Option<&mut Vec<u8>>) -> Parsed<()> {
        self.pos += 1; // "
        loop {
            let run = self.plain_run(self.pos);
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&self.bytes[self.pos..self.pos + run]);
            }
            self.pos += run;
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escaped = self.escape()?;
                    if let Some(out) = out.as_deref_mut() {
                        let mut utf8 = [0u8; 4];
                        out.extend_from_slice(escaped.encode_utf8(&mut utf8).as_bytes());
                    }
                }
                Some(0x80..) => {
                    let width = self.utf8_char()?;
                    if let Some(out) = out.as_deref_mut() {
                        out.extend_from_slice(&self.bytes[self.pos..self.pos + width]);
                    }
                    self.pos += width;
                }
                Some(_) => {
                    return Err(format!(
                        "control character in a string at byte {}",
                        self.pos
                    ))
                }
                None => return Err(self.eof()),
            }
        }
    }

    /// How many bytes from `from` need no attention inside a string: no quote, backslash, control
    /// character or byte above 0x7F. Eight bytes are tested at a time.
    #[inline]
    fn plain_run(&self, from: usize) -> usize {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // a byte of `v` is flagged when it is zero; a flag above a true one may be false (borrows)
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let rest = self.bytes.get(from..).unwrap_or_default();
        let mut at = 0;
        while at + 8 <= rest.len() {
            let v = word(&rest[at..at + 8]);
            let special = zero(v ^ (ONES * u64::from(b'"')))
                | zero(v ^ (ONES * u64::from(b'\\')))
                | (v.wrapping_sub(ONES * 0x20) & !v & HIGH) // below 0x20
                | (v & HIGH);
            if special != 0 {
                return at + (special.trailing_zeros() / 8) as usize;
            }
            at += 8;
        }
        at + rest[at..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
            .unwrap_or(rest.len() - at)
    }

    /// The width of the UTF-8 character at the cursor, checked (no overlong form, no surrogate).
    fn utf8_char(&self) -> Parsed<usize> {
        let width = match self.peek().unwrap_or(0) {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 0,
        };
        let valid = width > 0
            && self
                .bytes
                .get(self.pos..self.pos + width)
                .is_some_and(|char| std::str::from_utf8(char).is_ok());
        if valid {
            Ok(width)
        } else {
            Err(format!("invalid UTF-8 at byte {}", self.pos))
        }
    }

    fn escape(&mut self) -> Parsed<char> {
        let at = self.pos;
        let escaped = match self.next() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let unit = self.hex4()?;
                let code = match unit {
                    0xD800..=0xDBFF => {
                        let rest = self.bytes.get(self.pos..).unwrap_or_default();
                        if !rest.starts_with(b"\\u") {
                            return Err(format!("unpaired surrogate at byte {at}"));
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(format!("unpaired surrogate at byte {at}"));
                        }
                        0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(format!("unpaired surrogate at byte {at}")),
                    _ => unit,
                };
                char::from_u32(code).ok_or_else(|| format!("invalid escape at byte {at}"))?
            }
            _ => return Err(format!("invalid escape at byte {at}")),
        };
        Ok(escaped)
    }

    fn hex4(&mut self) -> Parsed<u32> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.eof())?;
        let mut unit = 0u32;
        for digit in digits {
            let value = (*digit as char)
                .to_digit(16)
                .ok_or_else(|| format!("invalid \\u escape at byte {}", self.pos))?;
            unit = unit * 16 + value;
        }
        self.pos += 4;
        Ok(unit)
    }

    /// Whether the bytes at the cursor are exactly `token`; if so, passes over them.
    #[inline]
    fn token_is(&mut self, token: &[u8]) -> bool {
        let end = self.pos + token.len();
        let matches = self
            .bytes
            .get(self.pos..end)
            .is_some_and(|text| same(text, token));
        if matches {
            self.pos = end;
        }
        matches
    }

    /// An object key, borrowed from the value unless it has escapes.
    fn key(&mut self) -> Parsed<Cow<'a, [u8]>> {
        if self.peek() != Some(b'"') {
            return Err(self.unexpected_here("a key"));
        }
        let bytes: &'a [u8] = self.bytes;
        let start = self.pos + 1;
        let run = self.plain_run(start);
        if bytes.get(start + run) == Some(&b'"') {
            self.pos = start + run + 1;
            return Ok(Cow::Borrowed(&bytes[start..start + run]));
        }
        let mut owned = Vec::new();
        self.string(Some(&mut owned))?;
        Ok(Cow::Owned(owned))
    }

    fn unexpected_here(&self, wanted: &str) -> String {
        if self.pos >= self.bytes.len() {
            self.eof()
        } else {
            format!("expected {wanted} at byte {}", self.pos)
        }
    }

    /// The text of a JSON number at the cursor (grammar checked): `(text, has fraction or exponent)`.
    fn number(&mut self, node: &Node) -> Parsed<(&'a [u8], bool)> {
        let bytes: &'a [u8] = self.bytes;
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ if self.pos == start => return Err(self.mismatch(node)),
            _ => return Err(format!("invalid number at byte {start}")),
        }
        let mut fractional = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.required_digits(start)?;
            fractional = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.required_digits(start)?;
            fractional = true;
        }
        if let Some(b'0'..=b'9') = self.peek() {
            return Err(format!("invalid number at byte {start}")); // a leading zero
        }
        Ok((&bytes[start..self.pos], fractional))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn required_digits(&mut self, start: usize) -> Parsed<()> {
        let before = self.pos;
        self.digits();
        if self.pos == before {
            return Err(format!("invalid number at byte {start}"));
        }
        Ok(())
    }

    /// A JSON integer in `bits` bits, scanned and accumulated in one pass (the common case).
    fn integer(&mut self, node: &Node, bits: u32) -> Parsed<i64> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let mut magnitude: u64 = 0;
        let mut overflow = false;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                let first = self.pos;
                while let Some(digit @ b'0'..=b'9') = self.peek() {
                    // wraps only past 19 digits, which never fit 64 signed bits
                    magnitude = magnitude
                        .wrapping_mul(10)
                        .wrapping_add(u64::from(digit - b'0'));
                    self.pos += 1;
                }
                overflow = self.pos - first > 19;
            }
            _ if !negative => return Err(self.mismatch(node)),
            _ => return Err(format!("invalid number at byte {start}")),
        }
        match self.peek() {
            Some(b'.' | b'e' | b'E') => return Err(format!("expected an integer at byte {start}")),
            Some(b'0'..=b'9') => return Err(format!("invalid number at byte {start}")), // a leading zero
            _ => {}
        }
        let limit = 1u64 << (bits - 1); // |min|; max is one less
        if overflow || magnitude > limit || (!negative && magnitude == limit) {
            return Err(format!(
                "integer out of range for {bits} bits at byte {start}"
            ));
        }
        // magnitude <= 2^63 here: the negation of 2^63 is i64::MIN, computed without overflow in i128
        Ok(if negative {
            (-i128::from(magnitude)) as i64
        } else {
            magnitude as i64
        })
    }

    fn float(&mut self, node: &Node, bits: u32) -> Parsed<f64> {
        if self.peek() == Some(b'"') {
            return self.float_word(node);
        }
        let start = self.pos;
        let (text, _) = self.number(node)?;
        // The grammar is checked, so the text is ASCII. Rust's parsers round correctly to the target width
        // (a 32-bit float is parsed as one, never through a double), as Arrow's do.
        let text = std::str::from_utf8(text).unwrap_or("");
        let value = if bits == 32 {
            text.parse::<f32>().map_or(f64::NAN, f64::from)
        } else {
            text.parse::<f64>().unwrap_or(f64::NAN)
        };
        if !value.is_finite() {
            return Err(format!("number out of range at byte {start}"));
        }
        Ok(value)
    }

    /// A float JSON has no number for: Kafka Connect's JsonConverter writes NaN and the infinities as these
    /// strings (Jackson's default), as they are spelled there and nowhere else.
    fn float_word(&mut self, node: &Node) -> Parsed<f64> {
        const WORDS: [(&[u8], f64); 3] = [
            (b"\"NaN\"", f64::NAN),
            (b"\"Infinity\"", f64::INFINITY),
            (b"\"-Infinity\"", f64::NEG_INFINITY),
        ];
        for (word, value) in WORDS {
            if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
                self.pos += word.len();
                return Ok(value);
            }
        }
        Err(self.mismatch(node))
    }

    /// A JSON number as decimal(precision, scale), exactly or not at all, appended to `out`; or a string
    /// whose whole text is such a number (Debezium's `decimal.handling.mode=string`).
    fn decimal(&mut self, node: &Node, out: &mut Vec<u8>) -> Parsed<()> {
        let Node::Decimal {
            precision,
            scale,
            width,
            ..
        } = *node
        else {
            unreachable!("only decimal nodes")
        };
        let start = self.pos;
        let text = if self.peek() == Some(b'"') {
            self.decimal_string(node)?
        } else {
            self.number(node)?.0
        };
        let (negative, unsigned) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        if unsigned.iter().any(|b| matches!(b, b'e' | b'E')) {
            return Err(format!("a decimal with an exponent at byte {start}"));
        }
        let (whole, fraction) = match unsigned.iter().position(|b| *b == b'.') {
            Some(dot) => (&unsigned[..dot], &unsigned[dot + 1..]),
            None => (unsigned, &unsigned[..0]),
        };
        let whole_digits = if whole == b"0" { 0 } else { whole.len() };
        if fraction.len() > scale as usize || whole_digits + scale as usize > precision as usize {
            return Err(format!(
                "the number at byte {start} does not fit decimal({precision}, {scale})"
            ));
        }
        // At most `precision` (<= 76) significant digits: the magnitude fits 256 bits.
        let mut magnitude = Magnitude::default();
        for digit in whole.iter().chain(fraction) {
            magnitude.mul_add(10, u64::from(digit - b'0'));
        }
        magnitude.scale_up(scale - fraction.len() as u32);
        magnitude.write(negative, width, out);
        Ok(())
    }

    /// The text of a string that holds exactly a number as JSON writes one. Any other string (a sign `+`,
    /// leading zeros, spaces, an escape, no digit before the point, text) is rejected: Arrow's reader, which
    /// takes more forms, decides it.
    fn decimal_string(&mut self, node: &Node) -> Parsed<&'a [u8]> {
        let open = self.pos;
        self.pos += 1;
        let (text, _) = self.number(node)?;
        if self.peek() != Some(b'"') {
            return Err(format!(
                "the decimal string at byte {open} is not only a number"
            ));
        }
        self.pos += 1;
        Ok(text)
    }

    /// Kafka Connect's VariableScaleDecimal, `{"scale": s, "value": base64(unscaled, big-endian two's
    /// complement)}`, as decimal(precision, scale): scaled up exactly, never rounded.
    fn variable_scale_decimal(
        &mut self,
        node: &Node,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Parsed<()> {
        let Node::Decimal {
            precision,
            scale,
            width,
            ref limit,
            ..
        } = *node
        else {
            unreachable!("only decimal nodes")
        };
        let start = self.pos;
        let (mut given_scale, mut unscaled) = (None, None);
        self.items(depth, |cursor| {
            let key = cursor.key()?;
            cursor.colon()?;
            match &*key {
                b"scale" if given_scale.is_none() => {
                    given_scale = Some(cursor.integer(&Node::Int { bits: 32 }, 32)?);
                }
                b"value" if unscaled.is_none() && cursor.peek() == Some(b'"') => {
                    let mut text = Vec::new();
                    cursor.string(Some(&mut text))?;
                    unscaled = Some(text);
                }
                _ => return Err(format!("not a {{scale, value}} decimal at byte {start}")),
            }
            Ok(())
        })?;
        let (Some(given_scale), Some(unscaled)) = (given_scale, unscaled) else {
            return Err(format!("not a {{scale, value}} decimal at byte {start}"));
        };
        // A negative scale (1E+30) scales up further; more than 80 places up overflows any magnitude.
        let places = u32::try_from(i64::from(scale) - given_scale)
            .ok()
            .filter(|p| *p <= 80);
        let fits = places.and_then(|places| {
            let (negative, mut magnitude) =
                Magnitude::from_be_twos_complement(&decimal::base64_decode(&unscaled)?)?;
            (magnitude.scale_up(places) && magnitude.less_than(limit))
                .then_some((negative, magnitude))
        });
        let Some((negative, magnitude)) = fits else {
            return Err(format!(
                "the decimal at byte {start} does not fit decimal({precision}, {scale}) exactly"
            ));
        };
        magnitude.write(negative, width, out);
        Ok(())
    }

    /// `"YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)"` (Debezium's ZonedTimestamp) as microseconds since the
    /// epoch, UTC. Other ISO-8601 spellings are rejected, not guessed at.
    fn timestamp_micros(&mut self) -> Parsed<i64> {
        let start = self.pos;
        let rest = self.bytes.get(start + 1..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|b| *b == b'"')
            .ok_or_else(|| self.eof())?;
        let text = &rest[..end];
        let micros = iso_micros(text)
            .ok_or_else(|| format!("not an ISO-8601 timestamp with a zone at byte {start}"))?;
        self.pos = start + 1 + end + 1;
        Ok(micros)
    }

    /// Checks and passes over any JSON value (a key the schema does not name).
    fn skip_value(&mut self, depth: usize) -> Parsed<()> {
        self.skip_ws();
        match self.peek() {
            Some(b'"') => self.string(None),
            Some(b'{') => self.items(depth + 1, |cursor| {
                cursor.key()?;
                cursor.colon()?;
                cursor.skip_value(depth + 1)
            }),
            Some(b'[') => self.items(depth + 1, |cursor| cursor.skip_value(depth + 1)),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => self.number(&Node::Float { bits: 64 }).map(|_| ()),
            None => Err(self.eof()),
        }
    }
}

fn iso_micros(text: &[u8]) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits.iter().try_fold(0i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if text.len() < 20 || separators.iter().any(|(at, sep)| text[*at] != *sep) {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut at = 19;
    let mut fraction = 0i64;
    if text[at] == b'.' {
        let digits = text[at + 1..]
            .iter()
            .take_while(|d| d.is_ascii_digit())
            .count();
        if digits == 0 || digits > 6 {
            return None;
        }
        fraction = number(at + 1..at + 1 + digits)? * 10i64.pow(6 - digits as u32);
        at += 1 + digits;
    }
    let offset_minutes = match &text[at..] {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (number(at + 1..at + 3)?, number(at + 4..at + 6)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 60 + minutes;
            if *sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000_000 + fraction)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12; // March = 0
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Byte equality for short keys, inline and without a `memcmp` call (which costs more than the
/// comparison): whole words compared as integers, the tail as one overlapping word.
#[inline]
fn same(left: &[u8], right: &[u8]) -> bool {
    let len = left.len();
    if len != right.len() {
        return false;
    }
    if len < 8 {
        return left.iter().zip(right).all(|(a, b)| a == b);
    }
    let mut at = 0;
    while at + 8 <= len {
        if word(&left[at..at + 8]) != word(&right[at..at + 8]) {
            return false;
        }
        at += 8;
    }
    at == len || word(&left[len - 8..]) == word(&right[len - 8..])
}

/// Eight bytes as one integer, the first byte lowest (so a flagged byte's index is its trailing zeros / 8).
#[inline]
fn word(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(chunk);
    u64::from_le_bytes(bytes)
}
