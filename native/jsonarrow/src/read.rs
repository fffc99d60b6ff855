//! The read loop of one call, in plain Rust: a `large_binary` column borrowed from its buffers, parsed
//! value by value into builders until the end or the first rejected value.
//!
//! A panic while parsing one value — a bug, since every input is meant to be either read or rejected —
//! is caught here and becomes that value's rejection, so the caller treats it like any value this reader
//! does not take; the rows before it are parsed again into fresh builders, because a panic may have left
//! the old ones half-updated.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::builder::Builder;
use crate::parse;
use crate::spec::Node;

/// A `large_binary` column borrowed from its buffers for the length of one call, its buffers checked.
pub struct Column<'a> {
    validity: Option<&'a [u8]>,
    offsets: &'a [u8],
    data: &'a [u8],
    offset: usize,
    len: usize,
}

impl<'a> Column<'a> {
    /// The column of `len` values from value `offset` of the buffers; `None` unless every offset those
    /// values need is there, in order and inside `data`, and the bitmap covers them.
    pub fn new(
        validity: Option<&'a [u8]>,
        offsets: &'a [u8],
        data: &'a [u8],
        offset: usize,
        len: usize,
    ) -> Option<Self> {
        let column = Column {
            validity,
            offsets,
            data,
            offset,
            len,
        };
        let last = offset.checked_add(len)?;
        let needed = last.checked_add(1)?.checked_mul(8)?;
        let fits = offsets.len() >= needed
            && !matches!(validity, Some(bits) if bits.len() < last.div_ceil(8))
            && (offset..last).all(|slot| column.boundary(slot) <= column.boundary(slot + 1))
            && column.boundary(last) <= data.len();
        fits.then_some(column)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Where value `slot` (counted from the buffers' start) begins in `data`, and value `slot - 1` ends;
    /// `usize::MAX` for an offset that is negative or not there (which the checks in `new` refuse).
    fn boundary(&self, slot: usize) -> usize {
        let raw = slot
            .checked_mul(8)
            .and_then(|at| self.offsets.get(at..at.checked_add(8)?))
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok());
        raw.map_or(usize::MAX, |raw| {
            usize::try_from(i64::from_le_bytes(raw)).unwrap_or(usize::MAX)
        })
    }

    /// Value `index` of the column, `None` when it is null.
    pub fn value(&self, index: usize) -> Option<&'a [u8]> {
        let slot = self.offset + index; // index < len: checked in `new` not to overflow
        if let Some(bits) = self.validity {
            if bits
                .get(slot / 8)
                .is_some_and(|byte| byte & (1 << (slot % 8)) == 0)
            {
                return None;
            }
        }
        // The checks in `new` keep every value inside `data`; were one not, it would read as empty (and be
        // rejected as no JSON object) rather than end the process.
        Some(
            self.data
                .get(self.boundary(slot)..self.boundary(slot + 1))
                .unwrap_or_default(),
        )
    }
}

/// What one call read: the rows, the indices of the values they came from, where it stopped and why.
pub struct Rows {
    pub root: Builder,
    pub taken: Vec<i64>,
    pub stop: usize,
    pub rejected: Option<String>,
}

/// Parses `column[start:]` into rows of `node` until the end or the first value rejected.
pub fn read(
    node: &Node,
    envelope: Option<&[u8]>,
    column: &Column<'_>,
    start: usize,
    max_bytes: usize,
) -> Result<Rows, String> {
    read_with(node, column, start, max_bytes, |bytes, root| {
        parse::record(bytes, node, envelope, root)
    })
}

/// `read` with the parser given: tests hand in one that panics.
pub fn read_with(
    node: &Node,
    column: &Column<'_>,
    start: usize,
    max_bytes: usize,
    parse: impl Fn(&[u8], &mut Builder) -> Result<(), String>,
) -> Result<Rows, String> {
    let mut root = Builder::new(node);
    let mut taken: Vec<i64> = Vec::new();
    let mut rejected = None;
    let mut index = start;
    while index < column.len() {
        let Some(bytes) = column.value(index) else {
            index += 1;
            continue;
        };
        if bytes.len() > max_bytes {
            rejected = Some(format!(
                "value of {} bytes exceeds the {max_bytes}-byte limit",
                bytes.len()
            ));
            break;
        }
        match catch_unwind(AssertUnwindSafe(|| parse(bytes, &mut root))) {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                root.truncate(taken.len());
                rejected = Some(reason);
                break;
            }
            Err(panic) => {
                root = reparse(node, column, &taken, &parse)?;
                rejected = Some(format!(
                    "the native reader failed on this value: {}",
                    panic_message(panic.as_ref())
                ));
                break;
            }
        }
        taken.push(index as i64); // index < len <= isize::MAX: a buffer's length
        index += 1;
    }
    Ok(Rows {
        root,
        taken,
        stop: index,
        rejected,
    })
}

/// Fresh builders holding the values already read: they were each read once, so they read again.
fn reparse(
    node: &Node,
    column: &Column<'_>,
    taken: &[i64],
    parse: &impl Fn(&[u8], &mut Builder) -> Result<(), String>,
) -> Result<Builder, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut root = Builder::new(node);
        for index in taken {
            let bytes = usize::try_from(*index)
                .ok()
                .and_then(|index| column.value(index))
                .ok_or("a value read before is gone")?;
            parse(bytes, &mut root)?;
        }
        Ok(root)
    }))
    .unwrap_or_else(|panic| {
        Err(format!(
            "the native reader failed reading again what it had read: {}",
            panic_message(panic.as_ref())
        ))
    })
}

/// The text a panic was raised with (`panic!` gives a `&str` or a `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
