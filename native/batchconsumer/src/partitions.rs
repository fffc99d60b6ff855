//! An owned `rd_kafka_topic_partition_list_t` and the element accessors every method shares.

use std::ffi::CString;
use std::ptr::{self, NonNull};

use pyo3::exceptions::PyValueError;
use pyo3::PyResult;
use rdkafka_sys::bindings as rd;

use crate::error::{describe, text, CallError};

/// librdkafka's "no particular partition", for subscriptions.
pub(crate) const UNASSIGNED: i32 = -1;
/// librdkafka's "no offset", the default of a new list element.
pub(crate) const OFFSET_INVALID: i64 = -1001;

/// A list we own: destroyed on drop, so no exit path leaks it.
pub(crate) struct TpList(NonNull<rd::rd_kafka_topic_partition_list_t>);

// SAFETY: the list is plain heap memory owned by this value alone; librdkafka calls that take it are
// synchronous, so moving it to the thread that runs a call without the GIL is sound.
unsafe impl Send for TpList {}
// SAFETY: a shared `&TpList` only reads the list (librdkafka writes outcomes through calls we make
// with the list borrowed by exactly one call at a time).
unsafe impl Sync for TpList {}

impl TpList {
    pub fn with_capacity(capacity: usize) -> Self {
        let size = i32::try_from(capacity).unwrap_or(i32::MAX);
        // SAFETY: list_new has no preconditions; it aborts rather than return null on allocation failure.
        let list = unsafe { rd::rd_kafka_topic_partition_list_new(size) };
        TpList(NonNull::new(list).expect("librdkafka returned no partition list"))
    }

    /// Takes ownership of a list librdkafka handed out (e.g. from `rd_kafka_assignment`).
    ///
    /// # Safety
    /// `list` is a live list nothing else owns or destroys.
    pub unsafe fn adopt(list: *mut rd::rd_kafka_topic_partition_list_t) -> Option<Self> {
        NonNull::new(list).map(TpList)
    }

    pub fn from_offsets(parts: &[(String, i32, i64)]) -> PyResult<Self> {
        let mut list = Self::with_capacity(parts.len());
        for (topic, partition, offset) in parts {
            list.add(topic, *partition, *offset)?;
        }
        Ok(list)
    }

    pub fn from_parts(parts: &[(String, i32)]) -> PyResult<Self> {
        let mut list = Self::with_capacity(parts.len());
        for (topic, partition) in parts {
            list.add(topic, *partition, OFFSET_INVALID)?;
        }
        Ok(list)
    }

    pub fn add(&mut self, topic: &str, partition: i32, offset: i64) -> PyResult<()> {
        let name = CString::new(topic)
            .map_err(|_| PyValueError::new_err(format!("topic name {topic:?} holds a NUL byte")))?;
        // SAFETY: the list is live; librdkafka copies the name, so `name` may go after the call.
        let element = unsafe {
            rd::rd_kafka_topic_partition_list_add(self.as_ptr(), name.as_ptr(), partition)
        };
        // SAFETY: list_add returns a pointer to the new element inside the live list.
        unsafe { (*element).offset = offset };
        Ok(())
    }

    pub fn as_ptr(&self) -> *mut rd::rd_kafka_topic_partition_list_t {
        self.0.as_ptr()
    }

    pub fn elements(&self) -> &[rd::rd_kafka_topic_partition_t] {
        // SAFETY: the list is live and owned by `self`, which outlives the borrow.
        unsafe { elements(self.as_ptr()) }
    }

    /// The first element that carries an error, as a call error naming the partition.
    pub fn first_error(&self) -> Result<(), CallError> {
        for element in self.elements() {
            let code = error_of(element);
            if code != 0 {
                let (topic, partition) = (topic_of(element), element.partition);
                let reason = format!("{topic} [{partition}]: {}", describe(code));
                return Err(CallError::with_reason(code, reason));
            }
        }
        Ok(())
    }

    pub fn pairs(&self) -> Vec<(String, i32)> {
        pairs(self.elements())
    }
}

impl Drop for TpList {
    fn drop(&mut self) {
        // SAFETY: the list is owned by `self` and destroyed exactly once, here.
        unsafe { rd::rd_kafka_topic_partition_list_destroy(self.as_ptr()) };
    }
}

/// The elements of a list librdkafka owns (the argument of a rebalance callback) or we own.
///
/// # Safety
/// `list` is null or live for at least `'a`, and not changed while the slice is in use.
pub(crate) unsafe fn elements<'a>(
    list: *const rd::rd_kafka_topic_partition_list_t,
) -> &'a [rd::rd_kafka_topic_partition_t] {
    // SAFETY: per the contract above; `cnt` elements of `elems` are initialised.
    unsafe {
        match list.as_ref() {
            Some(list) if list.cnt > 0 && !list.elems.is_null() => {
                std::slice::from_raw_parts(list.elems, list.cnt as usize)
            }
            _ => &[],
        }
    }
}

pub(crate) fn pairs(elements: &[rd::rd_kafka_topic_partition_t]) -> Vec<(String, i32)> {
    elements
        .iter()
        .map(|e| (topic_of(e), e.partition))
        .collect()
}

pub(crate) fn topic_of(element: &rd::rd_kafka_topic_partition_t) -> String {
    text(element.topic)
}

/// The element's error code, read as a plain integer: a broker code unknown to these bindings must
/// never be materialised as their Rust enum.
pub(crate) fn error_of(element: &rd::rd_kafka_topic_partition_t) -> i32 {
    // SAFETY: `err` is a C enum, stored as a 32-bit integer at this address.
    unsafe { ptr::addr_of!(element.err).cast::<i32>().read() }
}
