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

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

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

    /// Parses `values[start:]` until the end or the first rejected value; `None` values are skipped.
    ///
    /// Returns `(stop, rejected, buffers, taken)`: the index reading stopped at (the rejected value, or
    /// the end), why that value was rejected (`None` at the end), the buffer tree of the rows read, and
    /// the indices of the values that became those rows as little-endian int64 — `None` when they are
    /// exactly `start..stop`.
    fn read<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyList>,
        start: usize,
        max_bytes: usize,
    ) -> PyResult<Read<'py>> {
        let mut root = Builder::new(&self.root);
        let mut taken: Vec<i64> = Vec::new();
        let mut rejected = None;
        let mut index = start;
        while index < values.len() {
            let item = values.get_item(index)?;
            if item.is_none() {
                index += 1;
                continue;
            }
            let Ok(value) = item.downcast::<PyBytes>() else {
                rejected = Some("the value is not bytes".to_owned());
                break;
            };
            let bytes = value.as_bytes();
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

#[pymodule]
fn _jsonarrow(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Reader>()?;
    Ok(())
}
