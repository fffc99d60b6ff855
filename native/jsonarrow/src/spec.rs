//! The field tree a reader is compiled from, given by Python as nested tuples:
//! `("bool",)`, `("int", bits)`, `("float", bits)`, `("string",)`,
//! `("decimal", precision, scale, width, encoding)` (`width` 16 or 32 bytes; `encoding` `"number"` for a
//! JSON number, `"variable_scale"` for Kafka Connect's `{"scale": s, "value": base64}`),
//! `("timestamp_us",)` (an ISO-8601 string with a zone, as UTC microseconds),
//! `("list", item)` and `("struct", [(name, node), ...], strict)` — a strict struct rejects unknown keys,
//! a lenient one skips them (after checking that they are valid JSON).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::decimal::Magnitude;

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
        width: usize,
        variable_scale: bool,
        /// 10^precision: every magnitude must stay below it.
        limit: Magnitude,
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
            Node::Decimal {
                variable_scale: false,
                ..
            } => "a decimal number",
            Node::Decimal {
                variable_scale: true,
                ..
            } => "a {scale, value} object",
            Node::List(_) => "an array",
            Node::Struct { .. } => "an object",
        }
    }
}

/// A field tree nested deeper than this is refused: the builders recurse over it.
const MAX_DEPTH: usize = 64;

pub fn from_python(spec: &Bound<'_, PyAny>) -> PyResult<Node> {
    node(spec, 0)
}

fn node(spec: &Bound<'_, PyAny>, depth: usize) -> PyResult<Node> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "a field tree nested deeper than {MAX_DEPTH} levels"
        )));
    }
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
        "decimal" => {
            let precision: u32 = spec.get_item(1)?.extract()?;
            let scale: u32 = spec.get_item(2)?.extract()?;
            let width: usize = spec.get_item(3)?.extract()?;
            let encoding: String = spec.get_item(4)?.extract()?;
            let max_precision = match width {
                16 => 38,
                32 => 76,
                _ => 0,
            };
            if precision == 0 || precision > max_precision || scale > precision {
                return Err(PyValueError::new_err(format!(
                    "unsupported decimal({precision}, {scale}) in {width} bytes"
                )));
            }
            let variable_scale = match encoding.as_str() {
                "number" => false,
                "variable_scale" => true,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "unknown decimal encoding {other:?}"
                    )))
                }
            };
            let limit = Magnitude::pow10(precision).ok_or_else(|| {
                PyValueError::new_err(format!("10^{precision} does not fit 256 bits"))
            })?;
            Node::Decimal {
                precision,
                scale,
                width,
                variable_scale,
                limit,
            }
        }
        "list" => Node::List(Box::new(node(&spec.get_item(1)?, depth + 1)?)),
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
                fields.push((name.into_bytes(), node(&field.get_item(1)?, depth + 1)?));
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
