//! librdkafka's error codes and error objects, turned into `KafkaCallError` or an error-list entry.

use std::any::Any;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::{PyErr, PyResult};
use rdkafka_sys::bindings as rd;
use rdkafka_sys::types::RDKafkaRespErr;

create_exception!(
    _kafkabatch,
    KafkaCallError,
    PyException,
    "A librdkafka call failed: args are (code, name, reason, fatal, retriable)."
);

/// The error code librdkafka uses for "the handle is in the wrong state", reused for calls after `close`.
const STATE: i32 = RDKafkaRespErr::RD_KAFKA_RESP_ERR__STATE as i32;
/// librdkafka's generic local failure, for a failure of this module itself.
const FAIL: i32 = RDKafkaRespErr::RD_KAFKA_RESP_ERR__FAIL as i32;

/// One error as Python sees it in the list `consume` returns: `(code, name, reason, fatal)`.
pub(crate) type Entry = (i32, String, String, bool);

/// A failed librdkafka call, with everything `KafkaCallError` carries.
#[derive(Debug, Clone)]
pub(crate) struct CallError {
    pub code: i32,
    pub reason: String,
    pub fatal: bool,
    pub retriable: bool,
}

impl CallError {
    /// A bare error code: librdkafka's own description is the reason.
    pub fn code(code: i32) -> Self {
        Self::with_reason(code, describe(code))
    }

    pub fn with_reason(code: i32, reason: String) -> Self {
        CallError {
            code,
            reason,
            fatal: false,
            retriable: false,
        }
    }

    /// Takes ownership of `error` (may be null: no error) and destroys it.
    ///
    /// # Safety
    /// `error` is null or an error object returned by librdkafka that nothing else owns.
    pub unsafe fn take(error: *mut rd::rd_kafka_error_t) -> Option<Self> {
        if error.is_null() {
            return None;
        }
        // SAFETY: `error` is a live error object we own until the destroy below.
        let taken = unsafe {
            CallError {
                code: rd::rd_kafka_error_code(error) as i32,
                reason: text(rd::rd_kafka_error_string(error)),
                fatal: rd::rd_kafka_error_is_fatal(error) != 0,
                retriable: rd::rd_kafka_error_is_retriable(error) != 0,
            }
        };
        // SAFETY: owned by us and not used after this.
        unsafe { rd::rd_kafka_error_destroy(error) };
        Some(taken)
    }

    /// A panic inside this module (a bug): reported as a failed call, an ordinary exception, instead of
    /// PyO3's `PanicException`, which derives from `BaseException` and escapes `except Exception`.
    pub fn panicked(panic: &(dyn Any + Send)) -> Self {
        let message = if let Some(text) = panic.downcast_ref::<&str>() {
            (*text).to_owned()
        } else if let Some(text) = panic.downcast_ref::<String>() {
            text.clone()
        } else {
            "a panic without a message".to_owned()
        };
        Self::with_reason(
            FAIL,
            format!("the native consumer failed inside itself: {message}"),
        )
    }

    pub fn closed() -> Self {
        Self::with_reason(STATE, "the consumer is closed".to_owned())
    }

    pub fn entry(&self) -> Entry {
        (self.code, name(self.code), self.reason.clone(), self.fatal)
    }
}

impl From<CallError> for PyErr {
    fn from(error: CallError) -> PyErr {
        KafkaCallError::new_err((
            error.code,
            name(error.code),
            error.reason,
            error.fatal,
            error.retriable,
        ))
    }
}

/// Runs the body of a method called from Python; a panic becomes `KafkaCallError` (see `panicked`).
pub(crate) fn guarded<T>(body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(body))
        .unwrap_or_else(|panic| Err(CallError::panicked(panic.as_ref()).into()))
}

/// `Err` unless `code` is 0.
pub(crate) fn check(code: i32) -> Result<(), CallError> {
    match code {
        0 => Ok(()),
        _ => Err(CallError::code(code)),
    }
}

/// librdkafka's symbolic name of a code (`_TIMED_OUT`, `UNKNOWN_MEMBER_ID`): confluent_kafka's `KafkaError`
/// has a constant of that name, which is how the wrapper turns a per-partition error back into one.
pub(crate) fn name(code: i32) -> String {
    match RDKafkaRespErr::try_from(code) {
        // SAFETY: err2name returns a pointer to a static string for every code.
        Ok(known) => text(unsafe { rd::rd_kafka_err2name(known) }),
        // A broker code newer than this librdkafka: never transmute it into the enum.
        Err(_) => format!("ERR_{code}"),
    }
}

pub(crate) fn describe(code: i32) -> String {
    match RDKafkaRespErr::try_from(code) {
        // SAFETY: err2str returns a pointer to a static (or thread-local) string for every code.
        Ok(known) => text(unsafe { rd::rd_kafka_err2str(known) }),
        Err(_) => format!("unknown error code {code}"),
    }
}

/// A C string as an owned `String` (empty for null; invalid UTF-8 replaced, librdkafka's text is ASCII).
pub(crate) fn text(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka hands out NUL-terminated strings that live at least for this call.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}
