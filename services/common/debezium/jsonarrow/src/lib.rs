//! Schema-directed reader: JSON objects (one per input value) → Arrow column buffers.
//!
//! The reader is compiled once from a field tree (built in Python from an Arrow schema) and then parses
//! whole batches without creating a Python object per value: each value is scanned once, straight into
//! column builders. It accepts only what it can convert exactly — a value of another JSON type than its
//! column, an integer out of range, a decimal with more digits than its column, an unknown key where the
//! schema is strict, a duplicate key, invalid UTF-8 or JSON — and stops at the first value it rejects, so
//! the caller keeps the rows before it and hands the rejected value to a slower, more general path.

mod builder;
mod parse;
mod spec;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use builder::Builder;
use spec::Node;

/// A reader for one schema: `read` parses a list of values into column buffers.
#[pyclass(frozen, module = "services.common.debezium._jsonarrow")]
struct Reader {
    root: Node,
}

#[pymethods]
impl Reader {
    #[new]
    fn new(spec: &Bound<'_, PyAny>) -> PyResult<Self> {
        let root = spec::from_python(spec)?;
        if !matches!(root, Node::Struct { .. }) {
            return Err(PyValueError::new_err(
                "the root of a reader's spec must be a struct",
            ));
        }
        Ok(Reader { root })
    }

    /// Parses `values[start:]` until the end or the first rejected value.
    ///
    /// Returns `(rows, rejected, buffers)`: the number of values parsed, why the value at `start + rows`
    /// was rejected (`None` when every value parsed) and the buffer tree of the rows parsed.
    fn read<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyList>,
        start: usize,
    ) -> PyResult<(usize, Option<String>, Bound<'py, PyAny>)> {
        let mut root = Builder::new(&self.root);
        let mut rows = 0usize;
        let mut rejected = None;
        for item in values.iter().skip(start) {
            let value = item.downcast::<PyBytes>()?;
            if let Err(reason) = parse::record(value.as_bytes(), &self.root, &mut root) {
                root.truncate(rows);
                rejected = Some(reason);
                break;
            }
            rows += 1;
        }
        let buffers = root.finish(py)?;
        Ok((rows, rejected, buffers))
    }
}

#[pymodule]
fn _jsonarrow(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Reader>()?;
    Ok(())
}
