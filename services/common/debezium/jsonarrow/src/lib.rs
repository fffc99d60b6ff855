//! Schema-directed reader: JSON objects (one per input value) → Arrow column buffers.
//!
//! The reader is compiled once from a field tree (built in Python from an Arrow schema) and then parses
//! whole batches without creating a Python object per value: each value is scanned once, straight into
//! column builders. It accepts only what it can convert exactly and rejects the rest — a value of another
//! JSON type than its column, an integer out of range, a decimal with more digits than its column, an
//! unknown key where the schema is strict, a duplicate key, invalid UTF-8 or JSON. It stops at the first
//! value it rejects, so the caller keeps the rows before it and hands that value to a slower, more general
//! path.

mod builder;
mod decimal;
mod parse;
mod spec;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use builder::Builder;
use spec::Node;

/// What `Reader.read` returns: `(stop, rejected, buffers, taken)`.
type Read<'py> = (
    usize,
    Option<String>,
    Bound<'py, PyAny>,
    Option<Bound<'py, PyBytes>>,
);

/// A reader for one schema: `read` parses a list of values into column buffers.
#[pyclass(frozen, module = "services.common.debezium._jsonarrow")]
struct Reader {
    root: Node,
    envelope: Option<Vec<u8>>,
}

#[pymethods]
impl Reader {
    /// `envelope`: a value whose first key is `"schema"` is a wrapper (Kafka Connect's JsonConverter
    /// with schemas enabled); its row is the object under this key.
    #[new]
    #[pyo3(signature = (spec, envelope=None))]
    fn new(spec: &Bound<'_, PyAny>, envelope: Option<String>) -> PyResult<Self> {
        let root = spec::from_python(spec)?;
        if !matches!(root, Node::Struct { .. }) {
            return Err(PyValueError::new_err(
                "the root of a reader's spec must be a struct",
            ));
        }
        Ok(Reader {
            root,
            envelope: envelope.map(String::into_bytes),
        })
    }

    /// Parses `values[start:]` until the end or the first rejected value; null values are skipped.
    ///
    /// `values` is a column in Arrow's `large_binary` layout: `(validity, offsets, data, offset, length)`,
    /// the bitmap `None` when no value is null, and `offset` the array's offset into its buffers.
    /// Returns `(stop, rejected, buffers, taken)`: the index reading stopped at (the rejected value, or
    /// the end), why that value was rejected (`None` at the end), the buffer tree of the rows read, and
    /// the indices of the values that became those rows as little-endian int64 — `None` when they are
    /// exactly `start..stop`.
    fn read<'py>(
        &self,
        py: Python<'py>,
        values: ColumnBuffers,
        start: usize,
        max_bytes: usize,
    ) -> PyResult<Read<'py>> {
        let column = Column::borrow(&values)?;
        let mut root = Builder::new(&self.root);
        let mut taken: Vec<i64> = Vec::new();
        let mut rejected = None;
        let mut index = start;
        while index < column.len {
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
            if let Err(reason) =
                parse::record(bytes, &self.root, self.envelope.as_deref(), &mut root)
            {
                root.truncate(taken.len());
                rejected = Some(reason);
                break;
            }
            taken.push(index as i64);
            index += 1;
        }
        let buffers = root.finish(py)?;
        let contiguous = taken.len() == index - start;
        let taken = (!contiguous).then(|| {
            let data: Vec<u8> = taken.iter().flat_map(|i| i.to_le_bytes()).collect();
            PyBytes::new(py, &data)
        });
        Ok((index, rejected, buffers, taken))
    }
}

/// A `large_binary` column as Python hands it over: `(validity, offsets, data, offset, length)`.
type ColumnBuffers = (
    Option<PyBuffer<u8>>,
    PyBuffer<u8>,
    PyBuffer<u8>,
    usize,
    usize,
);

/// A `large_binary` column borrowed from its Python buffers for the length of one call.
struct Column<'a> {
    validity: Option<&'a [u8]>,
    offsets: &'a [u8],
    data: &'a [u8],
    offset: usize,
    len: usize,
}

impl<'a> Column<'a> {
    fn borrow(buffers: &'a ColumnBuffers) -> PyResult<Self> {
        let (validity, offsets, data, offset, len) = buffers;
        let column = Column {
            validity: validity.as_ref().map(bytes_of).transpose()?,
            offsets: bytes_of(offsets)?,
            data: bytes_of(data)?,
            offset: *offset,
            len: *len,
        };
        // every offset the values need must be there, in order, and inside the data
        let last = offset + len;
        let fits = column.offsets.len() >= (last + 1) * 8
            && !matches!(column.validity, Some(bits) if bits.len() * 8 < last)
            && (*offset..last).all(|slot| column.boundary(slot) <= column.boundary(slot + 1))
            && column.boundary(last) <= column.data.len();
        if !fits {
            return Err(PyValueError::new_err(
                "the value column's buffers do not hold its values",
            ));
        }
        Ok(column)
    }

    /// Where value `slot` (counted from the buffers' start) begins in `data`, and value `slot - 1` ends.
    fn boundary(&self, slot: usize) -> usize {
        let at = slot * 8;
        let raw: [u8; 8] = self.offsets[at..at + 8].try_into().expect("8 bytes");
        usize::try_from(i64::from_le_bytes(raw)).unwrap_or(usize::MAX)
    }

    /// Value `index` of the column, `None` when it is null.
    fn value(&self, index: usize) -> Option<&'a [u8]> {
        let slot = self.offset + index;
        if let Some(bits) = self.validity {
            if bits[slot / 8] & (1 << (slot % 8)) == 0 {
                return None;
            }
        }
        Some(&self.data[self.boundary(slot)..self.boundary(slot + 1)])
    }
}

/// The bytes of a contiguous, read-only buffer; they stay valid while `buffer` is held.
fn bytes_of(buffer: &PyBuffer<u8>) -> PyResult<&[u8]> {
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err("a value buffer is not contiguous"));
    }
    // SAFETY: the buffer is contiguous, `len_bytes` long, and the exporter keeps it alive and unchanged
    // while the view is held; the returned slice borrows the view.
    Ok(unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) })
}

#[pymodule]
fn _jsonarrow(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Reader>()?;
    Ok(())
}
