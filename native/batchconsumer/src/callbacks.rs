//! librdkafka's rebalance, error and log callbacks, and what they leave behind for the calling method.
//!
//! The callbacks run only while a consumer method serves the consumer queue (`consume`, `close`) — logs
//! too, because the log queue is forwarded there — so they always run on the thread that called that
//! method, which released the GIL first. They take the GIL back to call Python and never unwind into C:
//! a Python exception is kept for the method to raise once librdkafka returns, a panic is swallowed.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;
use rdkafka_sys::bindings as rd;
use rdkafka_sys::types::RDKafkaRespErr;

use crate::error::{text, CallError, Entry};
use crate::partitions::{elements, pairs, TpList};

const ASSIGN: i32 = RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS as i32;
const REVOKE: i32 = RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS as i32;
const FATAL: i32 = RDKafkaRespErr::RD_KAFKA_RESP_ERR__FATAL as i32;

/// The Python side of the callbacks, reached through librdkafka's opaque pointer.
pub(crate) struct Callbacks {
    on_rebalance: Py<PyAny>,
    on_log: Py<PyAny>,
    /// Cleared when Python can no longer be called (a consumer dropped while the interpreter exits):
    /// the callbacks then only do librdkafka's part.
    python: AtomicBool,
    pending: Mutex<Pending>,
}

/// What the callbacks of one call leave for the method that served them.
#[derive(Default)]
pub(crate) struct Pending {
    pub errors: Vec<Entry>,
    /// The first exception a Python callback raised; later ones are lost, like any chained failure.
    pub raised: Option<PyErr>,
}

impl Callbacks {
    pub fn new(on_rebalance: Py<PyAny>, on_log: Py<PyAny>) -> Self {
        Callbacks {
            on_rebalance,
            on_log,
            python: AtomicBool::new(true),
            pending: Mutex::new(Pending::default()),
        }
    }

    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.lock())
    }

    pub fn forget_python(&self) {
        self.python.store(false, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while the lock was held cannot leave `Pending` half-updated: keep using it.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn report(&self, error: CallError) {
        self.lock().errors.push(error.entry());
    }

    fn raised(&self, error: PyErr) {
        self.lock().raised.get_or_insert(error);
    }

    fn call(
        &self,
        callback: &Py<PyAny>,
        args: impl for<'py> IntoPyObject<'py, Target = pyo3::types::PyTuple>,
    ) {
        if !self.python.load(Ordering::Acquire) {
            return;
        }
        Python::with_gil(|py| {
            if let Err(error) = callback.call1(py, args) {
                self.raised(error);
            }
        });
    }
}

/// Installs the three callbacks; `callbacks` must outlive the handle created from `conf`.
///
/// # Safety
/// `conf` is a live configuration; `callbacks` stays at its address until the handle is destroyed.
pub(crate) unsafe fn install(conf: *mut rd::rd_kafka_conf_t, callbacks: &Callbacks) {
    // SAFETY: per the contract; the callbacks only read `Callbacks` through a shared reference.
    unsafe {
        rd::rd_kafka_conf_set_opaque(conf, ptr::from_ref(callbacks).cast_mut().cast());
        rd::rd_kafka_conf_set_rebalance_cb(conf, Some(rebalance_cb));
        rd::rd_kafka_conf_set_error_cb(conf, Some(error_cb));
        rd::rd_kafka_conf_set_log_cb(conf, Some(log_cb));
    }
}

/// # Safety
/// `opaque` is null or the `Callbacks` given to `install`, still alive.
unsafe fn callbacks<'a>(opaque: *mut c_void) -> Option<&'a Callbacks> {
    // SAFETY: per the contract.
    unsafe { opaque.cast::<Callbacks>().as_ref() }
}

unsafe extern "C" fn rebalance_cb(
    rk: *mut rd::rd_kafka_t,
    err: rd::rd_kafka_resp_err_t,
    partitions: *mut rd::rd_kafka_topic_partition_list_t,
    opaque: *mut c_void,
) {
    // SAFETY: librdkafka passes the opaque set by `install`, alive as long as the handle.
    let Some(callbacks) = (unsafe { callbacks(opaque) }) else {
        return;
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        rebalance(rk, err as i32, partitions, callbacks)
    }));
}

fn rebalance(
    rk: *mut rd::rd_kafka_t,
    err: i32,
    partitions: *mut rd::rd_kafka_topic_partition_list_t,
    callbacks: &Callbacks,
) {
    // SAFETY: the list is owned by librdkafka and stays unchanged for the whole callback.
    let parts = pairs(unsafe { elements(partitions) });
    let cooperative = is_cooperative(rk);
    match err {
        ASSIGN => {
            // Assign first: the application may seek or pause the new partitions in its callback.
            if let Err(error) = assign(rk, partitions, cooperative) {
                callbacks.report(error);
            }
            callbacks.call(&callbacks.on_rebalance, ("assign", parts));
        }
        REVOKE => {
            // The application commits what it has written while the partitions are still ours.
            // SAFETY: rk is the live handle serving this callback.
            let kind = match unsafe { rd::rd_kafka_assignment_lost(rk) } {
                0 => "revoke",
                _ => "lost",
            };
            callbacks.call(&callbacks.on_rebalance, (kind, parts));
            if let Err(error) = unassign(rk, partitions, cooperative) {
                callbacks.report(error);
            }
        }
        _ => {
            if let Err(error) = unassign_all(rk, cooperative) {
                callbacks.report(error);
            }
            callbacks.report(CallError::code(err));
        }
    }
}

fn is_cooperative(rk: *mut rd::rd_kafka_t) -> bool {
    // SAFETY: rk is live; the protocol name is a static string.
    let name = unsafe { rd::rd_kafka_rebalance_protocol(rk) };
    // SAFETY: non-null protocol names are NUL-terminated static strings.
    !name.is_null() && unsafe { CStr::from_ptr(name) }.to_bytes() == b"COOPERATIVE"
}

fn assign(
    rk: *mut rd::rd_kafka_t,
    partitions: *const rd::rd_kafka_topic_partition_list_t,
    cooperative: bool,
) -> Result<(), CallError> {
    if cooperative {
        // SAFETY: rk and the list are live; the returned error (if any) is ours to destroy.
        return unsafe { CallError::take(rd::rd_kafka_incremental_assign(rk, partitions)) }
            .map_or(Ok(()), Err);
    }
    // SAFETY: rk and the list are live; librdkafka copies the list.
    crate::error::check(unsafe { rd::rd_kafka_assign(rk, partitions) } as i32)
}

fn unassign(
    rk: *mut rd::rd_kafka_t,
    partitions: *const rd::rd_kafka_topic_partition_list_t,
    cooperative: bool,
) -> Result<(), CallError> {
    if cooperative {
        // SAFETY: rk and the list are live; the returned error (if any) is ours to destroy.
        return unsafe { CallError::take(rd::rd_kafka_incremental_unassign(rk, partitions)) }
            .map_or(Ok(()), Err);
    }
    // SAFETY: rk is live; a null list means "no partitions".
    crate::error::check(unsafe { rd::rd_kafka_assign(rk, ptr::null()) } as i32)
}

/// After a rebalance error nothing is known about what we still hold: give everything up.
fn unassign_all(rk: *mut rd::rd_kafka_t, cooperative: bool) -> Result<(), CallError> {
    if !cooperative {
        return unassign(rk, ptr::null(), false);
    }
    // The cooperative protocol refuses `assign(NULL)`: unassign the current assignment incrementally.
    let mut current = ptr::null_mut();
    // SAFETY: rk is live; on success `current` is a new list we own.
    crate::error::check(unsafe { rd::rd_kafka_assignment(rk, &mut current) } as i32)?;
    // SAFETY: `current` came from rd_kafka_assignment and nothing else owns it.
    match unsafe { TpList::adopt(current) } {
        Some(list) if !list.elements().is_empty() => unassign(rk, list.as_ptr(), true),
        _ => Ok(()),
    }
}

unsafe extern "C" fn error_cb(
    rk: *mut rd::rd_kafka_t,
    err: c_int,
    reason: *const c_char,
    opaque: *mut c_void,
) {
    // SAFETY: librdkafka passes the opaque set by `install`, alive as long as the handle.
    let Some(callbacks) = (unsafe { callbacks(opaque) }) else {
        return;
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let error = match err {
            FATAL => fatal_error(rk),
            _ => CallError::with_reason(err, text(reason)),
        };
        callbacks.report(error);
    }));
}

/// A fatal error is reported as `_FATAL`; the code and reason that caused it are kept by the handle.
pub(crate) fn fatal_error(rk: *mut rd::rd_kafka_t) -> CallError {
    let mut buffer = [0 as c_char; 512];
    // SAFETY: rk is live; librdkafka writes a NUL-terminated string of at most the buffer's size.
    let code = unsafe { rd::rd_kafka_fatal_error(rk, buffer.as_mut_ptr(), buffer.len()) } as i32;
    let mut error = CallError::with_reason(code, text(buffer.as_ptr()));
    error.fatal = true;
    error
}

unsafe extern "C" fn log_cb(
    rk: *const rd::rd_kafka_t,
    level: c_int,
    facility: *const c_char,
    message: *const c_char,
) {
    // Lines logged before a handle exists (configuration parsing) have nowhere to go.
    if rk.is_null() {
        return;
    }
    // SAFETY: rk is live; its opaque is the one set by `install`.
    let Some(callbacks) = (unsafe { callbacks(rd::rd_kafka_opaque(rk)) }) else {
        return;
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let args = (level, text(facility), text(message));
        callbacks.call(&callbacks.on_log, args);
    }));
}
