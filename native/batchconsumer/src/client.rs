//! The librdkafka handle: configured, created, and destroyed once nothing uses it any more.

use std::ffi::{c_char, CString};
use std::ptr;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rdkafka_sys::bindings as rd;

use crate::callbacks::{self, Callbacks};
use crate::error::{text, CallError};

const INVALID_ARG: i32 = rdkafka_sys::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR__INVALID_ARG as i32;

/// librdkafka's consumer handle and its consumer queue.
///
/// Shared (behind an `Arc`) by the consumer and every batch it fetched: a message must be destroyed
/// before the handle, so the handle goes when the last of them does.
pub(crate) struct Client {
    pub rk: *mut rd::rd_kafka_t,
    pub queue: *mut rd::rd_kafka_queue_t,
    /// Read by librdkafka's callbacks through the opaque pointer: boxed so its address never changes,
    /// and dropped only after the handle (fields drop after `Drop::drop`).
    pub callbacks: Box<Callbacks>,
}

// SAFETY: librdkafka's handle and queue are thread-safe (every API call may come from any thread), and
// `Callbacks` guards its mutable part with a mutex.
unsafe impl Send for Client {}
// SAFETY: as above.
unsafe impl Sync for Client {}

impl Client {
    pub fn new(config: Vec<(String, String)>, callbacks: Callbacks) -> PyResult<Self> {
        let callbacks = Box::new(callbacks);
        let conf = Conf::new(&config, &callbacks)?;
        let mut message = [0 as c_char; 512];
        // SAFETY: conf is live; on success librdkafka takes it over, on failure we still own it.
        let rk = unsafe {
            rd::rd_kafka_new(
                rd::rd_kafka_type_t::RD_KAFKA_CONSUMER,
                conf.0,
                message.as_mut_ptr(),
                message.len(),
            )
        };
        if rk.is_null() {
            return Err(CallError::with_reason(INVALID_ARG, text(message.as_ptr())).into());
        }
        conf.release();
        let mut client = Client {
            rk,
            queue: ptr::null_mut(),
            callbacks,
        };
        client.route_to_consumer_queue()?;
        Ok(client)
    }

    /// Logs, errors and rebalances all go to the consumer queue, so `consume` serves them on its own
    /// thread: Python is never called from one of librdkafka's threads.
    fn route_to_consumer_queue(&mut self) -> Result<(), CallError> {
        // SAFETY: rk is live; a null queue means the main queue, forwarded to the consumer queue next.
        let logs = unsafe { rd::rd_kafka_set_log_queue(self.rk, ptr::null_mut()) };
        crate::error::check(logs as i32)?;
        // SAFETY: rk is live.
        crate::error::check(unsafe { rd::rd_kafka_poll_set_consumer(self.rk) } as i32)?;
        // SAFETY: rk is live; the queue returned is a new reference we destroy on drop.
        self.queue = unsafe { rd::rd_kafka_queue_get_consumer(self.rk) };
        if self.queue.is_null() {
            let reason = "no consumer queue: is group.id set?".to_owned();
            return Err(CallError::with_reason(INVALID_ARG, reason));
        }
        Ok(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if !self.queue.is_null() {
            // SAFETY: our reference to the queue, released once.
            unsafe { rd::rd_kafka_queue_destroy(self.queue) };
        }
        // The consumer closed itself (`NativeConsumer::close`, or its drop) before the last reference went:
        // destroying without another close means no callback, so no Python, runs from here.
        // SAFETY: the handle is destroyed once, after every message (they hold this `Client`).
        unsafe { rd::rd_kafka_destroy_flags(self.rk, rd::RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE) };
    }
}

/// A configuration we own until `rd_kafka_new` takes it.
struct Conf(*mut rd::rd_kafka_conf_t);

impl Conf {
    fn new(config: &[(String, String)], callbacks: &Callbacks) -> PyResult<Self> {
        // SAFETY: conf_new has no preconditions.
        let conf = Conf(unsafe { rd::rd_kafka_conf_new() });
        for (key, value) in config {
            conf.set(key, value)?;
        }
        // Log lines are queued (and the queue routed to the consumer's), never logged from librdkafka's
        // own threads, which would need the GIL.
        conf.set("log.queue", "true")?;
        // SAFETY: conf is live; `callbacks` is boxed by the caller and outlives the handle.
        unsafe { callbacks::install(conf.0, callbacks) };
        Ok(conf)
    }

    fn set(&self, key: &str, value: &str) -> PyResult<()> {
        let invalid = |why: &str| PyValueError::new_err(format!("{key}: {why}"));
        let name = CString::new(key).map_err(|_| invalid("the name holds a NUL byte"))?;
        let setting = CString::new(value).map_err(|_| invalid("the value holds a NUL byte"))?;
        let mut message = [0 as c_char; 512];
        // SAFETY: conf is live; librdkafka copies both strings and writes a NUL-terminated message.
        let result = unsafe {
            rd::rd_kafka_conf_set(
                self.0,
                name.as_ptr(),
                setting.as_ptr(),
                message.as_mut_ptr(),
                message.len(),
            )
        };
        match result {
            rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK => Ok(()),
            _ => Err(invalid(&text(message.as_ptr()))),
        }
    }

    /// `rd_kafka_new` took the configuration over: do not destroy it.
    fn release(mut self) {
        self.0 = ptr::null_mut();
    }
}

impl Drop for Conf {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: still ours: never handed to a successful rd_kafka_new.
            unsafe { rd::rd_kafka_conf_destroy(self.0) };
        }
    }
}
