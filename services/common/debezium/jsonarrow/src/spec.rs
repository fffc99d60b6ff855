//! The field tree a reader is compiled from, given by Python as nested tuples:
//! `("bool",)`, `("int", bits)`, `("float", bits)`, `("string",)`, `("decimal128", precision, scale)`,
//! `("timestamp_us",)` (an ISO-8601 string with a zone, as UTC microseconds),
//! `("list", item)` and `("struct", [(name, node), ...], strict)` — a strict struct rejects unknown keys,
//! a lenient one skips them (after checking that they are valid JSON).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

pub enum Node {
    Bool,
    Int {
        bits: u32,
    },
    Float {
        bits: u32,
    },
    Str,
    TimestampMicros,
    Decimal {
        precision: u32,
        scale: u32,
    },
    List(Box<Node>),
    Struct {
        fields: Vec<(Vec<u8>, Node)>,
        strict: bool,
    },
}

impl Node {
    /// The JSON type this node expects, for rejection messages.
    pub fn expects(&self) -> &'static str {
        match self {
            Node::Bool => "a boolean",
            Node::Int { .. } => "an integer",
            Node::Float { .. } => "a number",
            Node::Str | Node::TimestampMicros => "a string",
            Node::Decimal { .. } => "a decimal number",
            Node::List(_) => "an array",
            Node::Struct { .. } => "an object",
        }
    }
}

pub fn from_python(spec: &Bound<'_, PyAny>) -> PyResult<Node> {
    let spec = spec.downcast::<PyTuple>()?;
    let kind: String = spec.get_item(0)?.extract()?;
    let node = match kind.as_str() {
        "bool" => Node::Bool,
        "int" => {
            let bits: u32 = spec.get_item(1)?.extract()?;
            if ![8, 16, 32, 64].contains(&bits) {
                return Err(PyValueError::new_err(format!(
                    "unsupported integer width {bits}"
                )));
            }
            Node::Int { bits }
        }
        "float" => {
            let bits: u32 = spec.get_item(1)?.extract()?;
            if ![32, 64].contains(&bits) {
                return Err(PyValueError::new_err(format!(
                    "unsupported float width {bits}"
                )));
            }
            Node::Float { bits }
        }
        "string" => Node::Str,
        "timestamp_us" => Node::TimestampMicros,
        "decimal128" => {
            let precision: u32 = spec.get_item(1)?.extract()?;
            let scale: u32 = spec.get_item(2)?.extract()?;
            if precision == 0 || precision > 38 || scale > precision {
                return Err(PyValueError::new_err(format!(
                    "unsupported decimal({precision}, {scale})"
                )));
            }
            Node::Decimal { precision, scale }
        }
        "list" => Node::List(Box::new(from_python(&spec.get_item(1)?)?)),
        "struct" => {
            let list = spec.get_item(1)?;
            let list = list.downcast::<PyList>()?;
            let mut fields = Vec::with_capacity(list.len());
            for field in list.iter() {
                let field = field.downcast::<PyTuple>()?;
                let name: String = field.get_item(0)?.extract()?;
                if fields
                    .iter()
                    .any(|(existing, _)| existing == name.as_bytes())
                {
                    return Err(PyValueError::new_err(format!("duplicate field {name:?}")));
                }
                fields.push((name.into_bytes(), from_python(&field.get_item(1)?)?));
            }
            let strict: bool = spec.get_item(2)?.extract()?;
            Node::Struct { fields, strict }
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unsupported field kind {other:?}"
            )))
        }
    };
    Ok(node)
}
