//! Column builders mirroring the field tree, and their hand-over to Python as Arrow buffers.
//!
//! Every builder holds one slot per row of its parent; `truncate` drops the slots of a rejected row so
//! the buffers only ever hold whole rows.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::spec::Node;

/// A key as the last object of a struct spelled it: its raw bytes from the opening quote through the
/// colon (`"name":`, whitespace included), the length of its name, and the field it named.
pub struct Key {
    pub token: Vec<u8>,
    pub name_len: usize,
    pub field: Option<usize>,
}

impl Key {
    pub fn name(&self) -> &[u8] {
        self.token.get(1..1 + self.name_len).unwrap_or_default()
    }
}

pub struct Validity {
    bits: Vec<bool>,
    nulls: usize,
}

impl Validity {
    fn new() -> Self {
        Validity {
            bits: Vec::new(),
            nulls: 0,
        }
    }

    fn push(&mut self, valid: bool) {
        self.nulls += usize::from(!valid);
        self.bits.push(valid);
    }

    fn push_nulls(&mut self, count: usize) {
        self.nulls += count;
        self.bits.resize(self.bits.len() + count, false);
    }

    fn len(&self) -> usize {
        self.bits.len()
    }

    fn truncate(&mut self, len: usize) {
        let dropped = self.bits.get(len..).unwrap_or_default();
        self.nulls -= dropped.iter().filter(|valid| !**valid).count();
        self.bits.truncate(len);
    }

    /// Arrow's validity bitmap, or `None` when no slot is null.
    fn finish<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        (self.nulls > 0).then(|| PyBytes::new(py, &pack(&self.bits)))
    }
}

fn pack(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (index, bit) in bits.iter().enumerate() {
        if *bit {
            out[index / 8] |= 1 << (index % 8);
        }
    }
    out
}

pub enum Builder {
    Bool {
        validity: Validity,
        values: Vec<bool>,
    },
    Int {
        validity: Validity,
        values: Vec<i64>,
        bits: u32,
    },
    Float {
        validity: Validity,
        values: Vec<f64>,
        bits: u32,
    },
    Str {
        validity: Validity,
        offsets: Vec<i32>,
        data: Vec<u8>,
    },
    Decimal {
        validity: Validity,
        data: Vec<u8>,
        width: usize,
    },
    List {
        validity: Validity,
        offsets: Vec<i32>,
        item: Box<Builder>,
    },
    Struct {
        validity: Validity,
        children: Vec<Builder>,
        /// The keys of the last object, in order, with the field each named: producers write every
        /// object of a stream in the same key order, so a key is matched by one comparison.
        shape: Vec<Key>,
        /// Null rows not given to the children yet: a run of null structs (the before image of every
        /// insert) becomes one bulk fill per child instead of a slot per child and row.
        deferred: usize,
    },
}

impl Builder {
    pub fn new(node: &Node) -> Builder {
        let validity = Validity::new();
        match node {
            Node::Bool => Builder::Bool {
                validity,
                values: Vec::new(),
            },
            Node::Int { bits } => Builder::Int {
                validity,
                values: Vec::new(),
                bits: *bits,
            },
            Node::Float { bits } => Builder::Float {
                validity,
                values: Vec::new(),
                bits: *bits,
            },
            Node::TimestampMicros => Builder::Int {
                validity,
                values: Vec::new(),
                bits: 64,
            },
            Node::Str => Builder::Str {
                validity,
                offsets: vec![0],
                data: Vec::new(),
            },
            Node::Decimal { width, .. } => Builder::Decimal {
                validity,
                data: Vec::new(),
                width: *width,
            },
            Node::List(item) => Builder::List {
                validity,
                offsets: vec![0],
                item: Box::new(Builder::new(item)),
            },
            Node::Struct { fields, .. } => Builder::Struct {
                validity,
                children: fields
                    .iter()
                    .map(|(_, child)| Builder::new(child))
                    .collect(),
                shape: Vec::new(),
                deferred: 0,
            },
        }
    }

    fn validity(&mut self) -> &mut Validity {
        match self {
            Builder::Bool { validity, .. }
            | Builder::Int { validity, .. }
            | Builder::Float { validity, .. }
            | Builder::Str { validity, .. }
            | Builder::Decimal { validity, .. }
            | Builder::List { validity, .. }
            | Builder::Struct { validity, .. } => validity,
        }
    }

    pub fn push_null(&mut self) {
        self.push_nulls(1);
    }

    /// `count` null slots; their values are zeros (Arrow's choice for the slots behind a null).
    fn push_nulls(&mut self, count: usize) {
        match self {
            Builder::Bool { values, .. } => values.resize(values.len() + count, false),
            Builder::Int { values, .. } => values.resize(values.len() + count, 0),
            Builder::Float { values, .. } => values.resize(values.len() + count, 0.0),
            Builder::Decimal { data, width, .. } => data.resize(data.len() + count * *width, 0),
            Builder::Str { offsets, .. } | Builder::List { offsets, .. } => {
                let last = *offsets.last().unwrap_or(&0);
                offsets.resize(offsets.len() + count, last);
            }
            Builder::Struct { deferred, .. } => *deferred += count,
        }
        self.validity().push_nulls(count);
    }

    /// Marks the slot just filled by a typed push as valid.
    pub fn mark_valid(&mut self) {
        self.validity().push(true);
    }

    pub fn truncate(&mut self, len: usize) {
        match self {
            Builder::Bool { values, .. } => values.truncate(len),
            Builder::Int { values, .. } => values.truncate(len),
            Builder::Float { values, .. } => values.truncate(len),
            Builder::Decimal { data, width, .. } => data.truncate(len * *width),
            Builder::Str { offsets, data, .. } => {
                offsets.truncate(len + 1);
                data.truncate(end_offset(offsets));
            }
            Builder::List { offsets, item, .. } => {
                offsets.truncate(len + 1);
                item.truncate(end_offset(offsets));
            }
            Builder::Struct {
                validity,
                children,
                deferred,
                ..
            } => {
                // The children hold the rows given to them, and maybe part of a rejected row: keep the
                // given rows up to `len`, and defer the rest of the nulls kept.
                let given = validity.len().saturating_sub(*deferred);
                children
                    .iter_mut()
                    .for_each(|child| child.truncate(len.min(given)));
                *deferred = len.saturating_sub(given);
            }
        }
        self.validity().truncate(len);
    }

    /// `(length, null_count, validity, buffers, children)`: the arguments of `pyarrow.Array.from_buffers`
    /// once the Arrow type is known (buffers after the validity bitmap; children for lists and structs).
    pub fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Builder::Struct {
            children, deferred, ..
        } = self
        {
            catch_up(children, deferred);
        }
        let empty = || PyList::empty(py);
        let (validity, buffers, children) = match self {
            Builder::Bool { validity, values } => {
                (validity, vec![PyBytes::new(py, &pack(values))], empty())
            }
            Builder::Int {
                validity,
                values,
                bits,
            } => (
                validity,
                vec![PyBytes::new(py, &narrow(values, *bits))],
                empty(),
            ),
            Builder::Float {
                validity,
                values,
                bits,
            } => {
                let data: Vec<u8> = if *bits == 32 {
                    values
                        .iter()
                        .flat_map(|v| (*v as f32).to_le_bytes())
                        .collect() // exact: parsed as f32
                } else {
                    values.iter().flat_map(|v| v.to_le_bytes()).collect()
                };
                (validity, vec![PyBytes::new(py, &data)], empty())
            }
            Builder::Decimal { validity, data, .. } => {
                (validity, vec![PyBytes::new(py, data)], empty())
            }
            Builder::Str {
                validity,
                offsets,
                data,
            } => (
                validity,
                vec![
                    PyBytes::new(py, &offsets_bytes(offsets)),
                    PyBytes::new(py, data),
                ],
                empty(),
            ),
            Builder::List {
                validity,
                offsets,
                item,
            } => (
                validity,
                vec![PyBytes::new(py, &offsets_bytes(offsets))],
                PyList::new(py, [item.finish(py)?])?,
            ),
            Builder::Struct {
                validity, children, ..
            } => {
                let finished = children
                    .iter_mut()
                    .map(|child| child.finish(py))
                    .collect::<PyResult<Vec<_>>>()?;
                (validity, Vec::new(), PyList::new(py, finished)?)
            }
        };
        let tuple = PyTuple::new(
            py,
            [
                validity.len().into_pyobject(py)?.into_any(),
                validity.nulls.into_pyobject(py)?.into_any(),
                validity
                    .finish(py)
                    .map_or_else(|| py.None().into_bound(py), Bound::into_any),
                PyList::new(py, buffers)?.into_any(),
                children.into_any(),
            ],
        )?;
        Ok(tuple.into_any())
    }
}

/// Where the last slot of an offsets buffer ends (offsets are never negative: they count bytes or items).
fn end_offset(offsets: &[i32]) -> usize {
    offsets
        .last()
        .map_or(0, |end| usize::try_from(*end).unwrap_or(0))
}

/// Gives a struct's children the null rows deferred so far, before they take the next row.
pub fn catch_up(children: &mut [Builder], deferred: &mut usize) {
    if *deferred > 0 {
        children
            .iter_mut()
            .for_each(|child| child.push_nulls(*deferred));
        *deferred = 0;
    }
}

fn narrow(values: &[i64], bits: u32) -> Vec<u8> {
    match bits {
        8 => values
            .iter()
            .flat_map(|v| (*v as i8).to_le_bytes())
            .collect(),
        16 => values
            .iter()
            .flat_map(|v| (*v as i16).to_le_bytes())
            .collect(),
        32 => values
            .iter()
            .flat_map(|v| (*v as i32).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn offsets_bytes(offsets: &[i32]) -> Vec<u8> {
    offsets.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// What the tests look at: the rows of a builder and whether its buffers agree with each other.
#[cfg(test)]
impl Builder {
    fn validity_ref(&self) -> &Validity {
        match self {
            Builder::Bool { validity, .. }
            | Builder::Int { validity, .. }
            | Builder::Float { validity, .. }
            | Builder::Str { validity, .. }
            | Builder::Decimal { validity, .. }
            | Builder::List { validity, .. }
            | Builder::Struct { validity, .. } => validity,
        }
    }

    pub fn rows(&self) -> usize {
        self.validity_ref().len()
    }

    pub fn is_valid(&self, row: usize) -> bool {
        self.validity_ref().bits[row]
    }

    /// Panics unless every buffer holds one slot per row (a struct's children: the rows given them so
    /// far) and the offsets are in order and end where the data ends.
    pub fn assert_consistent(&self) {
        let rows = self.rows();
        let validity = self.validity_ref();
        assert_eq!(
            validity.nulls,
            validity.bits.iter().filter(|v| !**v).count()
        );
        let assert_offsets = |offsets: &[i32], end: usize| {
            assert_eq!(offsets.len(), rows + 1);
            assert_eq!(offsets[0], 0);
            assert!(offsets.windows(2).all(|pair| pair[0] <= pair[1]));
            assert_eq!(end_offset(offsets), end);
        };
        match self {
            Builder::Bool { values, .. } => assert_eq!(values.len(), rows),
            Builder::Int { values, .. } => assert_eq!(values.len(), rows),
            Builder::Float { values, .. } => assert_eq!(values.len(), rows),
            Builder::Decimal { data, width, .. } => assert_eq!(data.len(), rows * width),
            Builder::Str { offsets, data, .. } => assert_offsets(offsets, data.len()),
            Builder::List { offsets, item, .. } => {
                assert_offsets(offsets, item.rows());
                item.assert_consistent();
            }
            Builder::Struct {
                children, deferred, ..
            } => {
                for child in children {
                    assert_eq!(child.rows() + deferred, rows);
                    child.assert_consistent();
                }
            }
        }
    }
}
