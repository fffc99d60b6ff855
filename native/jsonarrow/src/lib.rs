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
mod read;
mod spec;

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use read::Column;
use spec::Node;

create_exception!(
    _jsonarrow,
    ReaderError,
    PyRuntimeError,
    "The native reader failed inside itself on a call (a bug, not the input's fault): nothing was read."
);

/// The module's exception was created as `_jsonarrow.ReaderError`: give it its importable name.
const MODULE: &str = "services.common.debezium._jsonarrow";

/// What `Reader.read` returns: `(stop, rejected, buffers, taken)`.
type Read<'py> = (
    usize,
    Option<String>,
    Bound<'py, PyAny>,
    Option<Bound<'py, PyBytes>>,
);

/// Runs the body of a method called from Python; a panic becomes `ReaderError`, an ordinary exception,
/// instead of PyO3's `PanicException`, which derives from `BaseException` and escapes `except Exception`.
fn guarded<T>(body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(body))
        .unwrap_or_else(|panic| Err(ReaderError::new_err(read::panic_message(panic.as_ref()))))
}

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
        guarded(|| {
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
        })
    }

    /// Parses `values[start:]` until the end or the first rejected value; null values are skipped.
    ///
    /// `values` is a column in Arrow's `large_binary` layout: `(validity, offsets, data, offset, length)`,
    /// the bitmap `None` when no value is null, and `offset` the array's offset into its buffers.
    /// Returns `(stop, rejected, buffers, taken)`: the index reading stopped at (the rejected value, or
    /// the end), why that value was rejected (`None` at the end), the buffer tree of the rows read, and
    /// the indices of the values that became those rows as little-endian int64 — `None` when they are
    /// exactly `start..stop`. A value the reader fails on inside itself is rejected like any other;
    /// a failure outside any one value raises `ReaderError`.
    fn read<'py>(
        &self,
        py: Python<'py>,
        values: ColumnBuffers,
        start: usize,
        max_bytes: usize,
    ) -> PyResult<Read<'py>> {
        guarded(|| {
            let column = borrow(&values)?;
            let envelope = self.envelope.as_deref();
            let mut rows = read::read(&self.root, envelope, &column, start, max_bytes)
                .map_err(ReaderError::new_err)?;
            let buffers = rows.root.finish(py)?;
            let contiguous = rows.taken.len() == rows.stop.saturating_sub(start);
            let taken = (!contiguous).then(|| {
                let data: Vec<u8> = rows.taken.iter().flat_map(|i| i.to_le_bytes()).collect();
                PyBytes::new(py, &data)
            });
            Ok((rows.stop, rows.rejected, buffers, taken))
        })
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

/// The column of Python's buffers, checked to hold its values (see `Column::new`).
fn borrow(buffers: &ColumnBuffers) -> PyResult<Column<'_>> {
    let (validity, offsets, data, offset, len) = buffers;
    let validity = validity.as_ref().map(bytes_of).transpose()?;
    Column::new(validity, bytes_of(offsets)?, bytes_of(data)?, *offset, *len)
        .ok_or_else(|| PyValueError::new_err("the value column's buffers do not hold its values"))
}

/// The bytes of a contiguous, read-only buffer; they stay valid while `buffer` is held.
fn bytes_of(buffer: &PyBuffer<u8>) -> PyResult<&[u8]> {
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err("a value buffer is not contiguous"));
    }
    if buffer.len_bytes() == 0 {
        return Ok(&[]); // an empty buffer's pointer may be null, which no slice may hold
    }
    // SAFETY: the buffer is contiguous, `len_bytes` long, and the exporter keeps it alive and unchanged
    // while the view is held; the returned slice borrows the view.
    Ok(unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) })
}

#[pymodule]
fn _jsonarrow(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Reader>()?;
    let exception = module.py().get_type::<ReaderError>();
    exception.setattr("__module__", MODULE)?;
    module.add("ReaderError", exception)?;
    Ok(())
}

#[cfg(test)]
mod tests;
