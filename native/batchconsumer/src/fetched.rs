//! One fetched batch: librdkafka's messages, handed to Python as columns instead of one object each.

use std::ffi::{c_char, c_void};
use std::ptr;
use std::sync::Arc;

use pyo3::exceptions::{PyIndexError, PyMemoryError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rdkafka_sys::bindings as rd;

use crate::client::Client;
use crate::error::{guarded, text};

/// A message librdkafka handed out and only `Fetched` destroys.
#[repr(transparent)]
pub(crate) struct MessagePtr(pub *mut rd::rd_kafka_message_t);

// SAFETY: a fetched message is immutable; librdkafka allows reading and destroying it on any thread.
unsafe impl Send for MessagePtr {}
// SAFETY: as above — nothing mutates a message while it is shared.
unsafe impl Sync for MessagePtr {}

impl MessagePtr {
    fn get(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: the pointer is live until `Fetched` drops it, and nothing writes through it.
        unsafe { &*self.0 }
    }

    /// The error code, read as a plain integer: a broker code unknown to these bindings must never be
    /// materialised as their Rust enum.
    pub fn error(&self) -> i32 {
        // SAFETY: `err` is a C enum, stored as a 32-bit integer at this address of a live message.
        unsafe { ptr::addr_of!((*self.0).err).cast::<i32>().read() }
    }

    fn payload(&self) -> Option<&[u8]> {
        let message = self.get();
        // SAFETY: librdkafka's payload is `len` readable bytes for as long as the message lives.
        unsafe { slice(message.payload, message.len) }
    }

    fn key(&self) -> Option<&[u8]> {
        let message = self.get();
        // SAFETY: as for the payload.
        unsafe { slice(message.key, message.key_len) }
    }

    fn timestamp(&self) -> (u32, i64) {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is live; librdkafka writes a valid timestamp type.
        let millis = unsafe { rd::rd_kafka_message_timestamp(self.0, &mut kind) };
        (kind as u32, millis)
    }

    fn topic(&self) -> String {
        // SAFETY: a fetched message's topic handle lives at least as long as the message.
        text(unsafe { rd::rd_kafka_topic_name(self.get().rkt) })
    }

    /// Destroys the message; the pointer is dangling afterwards.
    pub fn destroy(&self) {
        // SAFETY: called exactly once per message, by its owner.
        unsafe { rd::rd_kafka_message_destroy(self.0) };
    }
}

/// # Safety
/// `data` is null or points to `len` bytes that live for `'a`.
unsafe fn slice<'a>(data: *const c_void, len: usize) -> Option<&'a [u8]> {
    if data.is_null() {
        return None;
    }
    // SAFETY: per the contract.
    Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

/// A batch of fetched messages (no errors among them) in the order librdkafka returned them.
#[pyclass(frozen, module = "services.common.kafka._kafkabatch")]
pub(crate) struct Fetched {
    messages: Vec<MessagePtr>,
    /// Keeps the handle alive: librdkafka must not be destroyed while its messages are.
    _client: Arc<Client>,
}

impl Fetched {
    pub fn new(messages: Vec<MessagePtr>, client: Arc<Client>) -> Self {
        Fetched {
            messages,
            _client: client,
        }
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        self.messages.iter().for_each(MessagePtr::destroy);
    }
}

/// `record(i)`: `(topic, partition, offset, timestamp_type, timestamp_ms, key, value, headers)`.
type Record<'py> = (
    String,
    i32,
    i64,
    u32,
    i64,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
    Option<Vec<Header<'py>>>,
);
type Header<'py> = (String, Option<Bound<'py, PyBytes>>);

#[pymethods]
impl Fetched {
    pub(crate) fn __len__(&self) -> PyResult<usize> {
        guarded(|| Ok(self.messages.len()))
    }

    /// `(topic, partition, start, stop)` of each run of consecutive messages of one partition.
    fn runs(&self) -> PyResult<Vec<(String, i32, usize, usize)>> {
        guarded(|| {
            // One topic handle per topic name and client, so comparing pointers compares topics.
            let keys = self
                .messages
                .iter()
                .map(|m| (m.get().rkt, m.get().partition));
            Ok(runs_of(keys)
                .into_iter()
                .map(|((_, partition), start, stop)| {
                    (self.messages[start].topic(), partition, start, stop)
                })
                .collect())
        })
    }

    /// Each message's offset as little-endian int64.
    fn offsets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        guarded(|| {
            let offsets: Vec<i64> = self.messages.iter().map(|m| m.get().offset).collect();
            int64s(py, &offsets)
        })
    }

    /// Each message's timestamp in milliseconds as little-endian int64, -1 when there is none.
    fn timestamps_ms<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        guarded(|| {
            let millis: Vec<i64> = self.messages.iter().map(|m| m.timestamp().1).collect();
            int64s(py, &millis)
        })
    }

    /// The values as the buffers of one Arrow `large_binary` array: `(validity, offsets, data)`.
    ///
    /// A NULL payload (a tombstone) is a null entry; `validity` is `None` when there is none.
    fn values<'py>(&self, py: Python<'py>) -> PyResult<ValueBuffers<'py>> {
        guarded(|| {
            let payloads: Vec<Option<&[u8]>> =
                self.messages.iter().map(MessagePtr::payload).collect();
            let validity = match payloads.iter().any(Option::is_none) {
                true => Some(PyBytes::new(py, &validity_bits(&payloads))),
                false => None,
            };
            let ends =
                value_ends(&payloads).ok_or_else(|| PyMemoryError::new_err("batch too large"))?;
            let total = ends.last().map_or(0, |end| *end as usize); // checked by value_ends
            let offsets = int64s(py, &ends)?;
            let data = filled(py, total, |out| {
                let mut at = 0;
                for payload in payloads.iter().flatten() {
                    // SAFETY: `out` has `total` bytes, the sum of every payload's length; each write lands
                    // after the previous one, so together they stay in bounds and cover every byte.
                    unsafe {
                        ptr::copy_nonoverlapping(payload.as_ptr(), out.add(at), payload.len())
                    };
                    at += payload.len();
                }
            })?;
            Ok((validity, offsets, data))
        })
    }

    /// Message `i` in full, for the rare path that needs one record (the dead-letter queue).
    fn record<'py>(&self, py: Python<'py>, i: isize) -> PyResult<Record<'py>> {
        guarded(|| {
            let message = usize::try_from(i)
                .ok()
                .and_then(|i| self.messages.get(i))
                .ok_or_else(|| {
                    PyIndexError::new_err(format!("message {i} of {}", self.messages.len()))
                })?;
            let (kind, millis) = message.timestamp();
            let fields = message.get();
            Ok((
                message.topic(),
                fields.partition,
                fields.offset,
                kind,
                millis,
                message.key().map(|k| PyBytes::new(py, k)),
                message.payload().map(|v| PyBytes::new(py, v)),
                headers(py, message),
            ))
        })
    }
}

type ValueBuffers<'py> = (
    Option<Bound<'py, PyBytes>>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
);

/// `(key, start, stop)` of each run of consecutive equal keys.
pub(crate) fn runs_of<K: PartialEq>(keys: impl IntoIterator<Item = K>) -> Vec<(K, usize, usize)> {
    let mut runs: Vec<(K, usize, usize)> = Vec::new();
    for (index, key) in keys.into_iter().enumerate() {
        match runs.last_mut() {
            Some(run) if run.0 == key => run.2 = index + 1,
            _ => runs.push((key, index, index + 1)),
        }
    }
    runs
}

/// Arrow's validity bitmap: bit `i` (LSB first) set when value `i` is present.
pub(crate) fn validity_bits(payloads: &[Option<&[u8]>]) -> Vec<u8> {
    let mut bits = vec![0u8; payloads.len().div_ceil(8)];
    for (i, payload) in payloads.iter().enumerate() {
        bits[i / 8] |= u8::from(payload.is_some()) << (i % 8);
    }
    bits
}

/// Arrow's `large_binary` offsets of the payloads (a null one takes no bytes); `None` when their total
/// does not fit an int64 offset.
pub(crate) fn value_ends(payloads: &[Option<&[u8]>]) -> Option<Vec<i64>> {
    let mut ends = Vec::with_capacity(payloads.len() + 1);
    ends.push(0i64);
    let mut total = 0i64;
    for payload in payloads {
        let len = i64::try_from(payload.map_or(0, <[u8]>::len)).ok()?;
        total = total.checked_add(len)?;
        ends.push(total);
    }
    Some(ends)
}

fn int64s<'py>(py: Python<'py>, values: &[i64]) -> PyResult<Bound<'py, PyBytes>> {
    filled(py, values.len() * 8, |out| {
        for (i, value) in values.iter().enumerate() {
            // SAFETY: `out` has room for exactly `values.len()` int64s.
            unsafe { ptr::copy_nonoverlapping(value.to_le_bytes().as_ptr(), out.add(i * 8), 8) };
        }
    })
}

/// A new `bytes` of `len` bytes that `fill` writes in full — without zeroing it first, which for a
/// batch's values would be a second pass over megabytes.
fn filled<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(*mut u8),
) -> PyResult<Bound<'py, PyBytes>> {
    let size =
        ffi::Py_ssize_t::try_from(len).map_err(|_| PyMemoryError::new_err("batch too large"))?;
    // SAFETY: a null source asks CPython for an uninitialised object of `len` bytes, which `fill` writes.
    let object = unsafe { ffi::PyBytes_FromStringAndSize(ptr::null(), size) };
    // SAFETY: a new reference, or null with an exception set.
    let bytes = unsafe { Bound::from_owned_ptr_or_err(py, object) }?.downcast_into::<PyBytes>()?;
    // SAFETY: the object is a fresh bytes of `len` bytes that no one else has seen yet.
    fill(unsafe { ffi::PyBytes_AsString(bytes.as_ptr()) }.cast::<u8>());
    Ok(bytes)
}

/// The message's headers in order, `None` when it has none.
fn headers<'py>(py: Python<'py>, message: &MessagePtr) -> Option<Vec<Header<'py>>> {
    let mut all = ptr::null_mut();
    // SAFETY: the message is live; on success `all` points to headers the message owns.
    if unsafe { rd::rd_kafka_message_headers(message.0, &mut all) } as i32 != 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let (mut name, mut value, mut size): (*const c_char, *const c_void, usize) =
            (ptr::null(), ptr::null(), 0);
        // SAFETY: `all` is live with the message; librdkafka fills the three out-parameters.
        let found = unsafe {
            rd::rd_kafka_header_get_all(all, headers.len(), &mut name, &mut value, &mut size)
        };
        if found as i32 != 0 {
            return Some(headers);
        }
        // SAFETY: the header's value is `size` bytes owned by the message (null for a null value).
        let value = unsafe { slice(value, size) }.map(|v| PyBytes::new(py, v));
        headers.push((text(name), value));
    }
}
