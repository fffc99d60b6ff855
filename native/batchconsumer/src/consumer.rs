//! `NativeConsumer`: a group consumer whose `consume` returns a whole batch as one `Fetched`.

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rdkafka_sys::bindings as rd;

use crate::callbacks::{fatal_error, Callbacks};
use crate::client::Client;
use crate::error::{check, describe, guarded, CallError, Entry};
use crate::fetched::{Fetched, MessagePtr};
use crate::partitions::{error_of, topic_of, TpList, UNASSIGNED};

const FATAL: i32 = rdkafka_sys::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR__FATAL as i32;

/// The array a batch's message pointers land in is allocated in full before the call: bound it.
const MAX_BATCH: usize = 1 << 20;

const OPEN: u8 = 0;
/// `close` runs: its revoke callback may still commit, so methods keep working until it returns.
const CLOSING: u8 = 1;
const CLOSED: u8 = 2;

/// `commit` returns `(topic, partition, offset, error name or None)` per partition.
type Committed = (String, i32, i64, Option<String>);

/// A Kafka group consumer built on librdkafka's batch consume.
#[pyclass(frozen, module = "services.common.kafka._kafkabatch")]
pub(crate) struct NativeConsumer {
    client: Arc<Client>,
    state: AtomicU8,
}

#[pymethods]
impl NativeConsumer {
    /// `config`: librdkafka properties, all strings. `on_rebalance(kind, partitions)` with kind
    /// `"assign"`, `"revoke"` or `"lost"`; `on_log(level, facility, message)` with syslog levels.
    #[new]
    pub(crate) fn new(
        config: &Bound<'_, PyDict>,
        on_rebalance: Py<PyAny>,
        on_log: Py<PyAny>,
    ) -> PyResult<Self> {
        guarded(|| {
            let mut pairs = Vec::with_capacity(config.len());
            for (key, value) in config.iter() {
                pairs.push((key.extract::<String>()?, value.extract::<String>()?));
            }
            let client = Client::new(pairs, Callbacks::new(on_rebalance, on_log))?;
            Ok(NativeConsumer {
                client: Arc::new(client),
                state: AtomicU8::new(OPEN),
            })
        })
    }

    /// Subscribes to `topics`; a name starting with `^` is a regular expression.
    fn subscribe(&self, topics: Vec<String>) -> PyResult<()> {
        guarded(|| {
            let client = self.open()?;
            let mut list = TpList::with_capacity(topics.len());
            for topic in &topics {
                list.add(topic, UNASSIGNED, crate::partitions::OFFSET_INVALID)?;
            }
            // SAFETY: rk and the list are live; librdkafka copies the list.
            Ok(check(
                unsafe { rd::rd_kafka_subscribe(client.rk, list.as_ptr()) } as i32,
            )?)
        })
    }

    /// One batch of at most `max_messages`, waiting up to `timeout_s` (0 when negative) without the GIL.
    ///
    /// Returns the messages and the errors met on the way: errored messages and errors reported by
    /// librdkafka while the call ran, as `(code, name, reason, fatal)`. An exception raised by a
    /// callback during the call is raised here instead, and the batch is dropped.
    pub(crate) fn consume(
        &self,
        py: Python<'_>,
        max_messages: usize,
        timeout_s: f64,
    ) -> PyResult<(Fetched, Vec<Entry>)> {
        guarded(|| {
            if !(1..=MAX_BATCH).contains(&max_messages) {
                let why = format!("max_messages must be between 1 and {MAX_BATCH}");
                return Err(PyValueError::new_err(why));
            }
            let client = self.open()?;
            let mut slots: Vec<MessagePtr> = Vec::with_capacity(max_messages);
            let count = py.allow_threads(|| {
                // SAFETY: the queue is live; librdkafka writes at most `max_messages` pointers to `slots`.
                unsafe {
                    rd::rd_kafka_consume_batch_queue(
                        client.queue,
                        millis(timeout_s),
                        slots.as_mut_ptr().cast(),
                        max_messages,
                    )
                }
            });
            let count = usize::try_from(count).map_err(|_| CallError::code(last_error()))?;
            // librdkafka never writes more than asked; were it to claim so, only what was asked is read
            let count = count.min(max_messages);
            // SAFETY: librdkafka initialised the first `count` slots (count <= max_messages).
            unsafe { slots.set_len(count) };
            let (messages, mut errors) = split(client, slots);
            let fetched = Fetched::new(messages, Arc::clone(client));
            let pending = client.callbacks.take();
            if let Some(raised) = pending.raised {
                return Err(raised);
            }
            errors.extend(pending.errors);
            Ok((fetched, errors))
        })
    }

    /// Commits `(topic, partition, offset)` synchronously; per-partition outcomes come back.
    fn commit(&self, py: Python<'_>, offsets: Vec<(String, i32, i64)>) -> PyResult<Vec<Committed>> {
        guarded(|| {
            let client = self.open()?;
            let list = TpList::from_offsets(&offsets)?;
            // SAFETY: rk and the list are live; a synchronous commit writes each element's outcome.
            let code =
                py.allow_threads(
                    || unsafe { rd::rd_kafka_commit(client.rk, list.as_ptr(), 0) } as i32,
                );
            let committed: Vec<Committed> = list
                .elements()
                .iter()
                .map(|e| {
                    (
                        topic_of(e),
                        e.partition,
                        e.offset,
                        nonzero_name(error_of(e)),
                    )
                })
                .collect();
            // A failure of some partitions is reported through them; only a failure with none is the call's.
            if code != 0 && committed.iter().all(|c| c.3.is_none()) {
                return Err(CallError::code(code).into());
            }
            Ok(committed)
        })
    }

    fn pause(&self, partitions: Vec<(String, i32)>) -> PyResult<()> {
        guarded(|| {
            let client = self.open()?;
            let list = TpList::from_parts(&partitions)?;
            // SAFETY: rk and the list are live.
            check(unsafe { rd::rd_kafka_pause_partitions(client.rk, list.as_ptr()) } as i32)?;
            Ok(list.first_error()?)
        })
    }

    fn resume(&self, partitions: Vec<(String, i32)>) -> PyResult<()> {
        guarded(|| {
            let client = self.open()?;
            let list = TpList::from_parts(&partitions)?;
            // SAFETY: rk and the list are live.
            check(unsafe { rd::rd_kafka_resume_partitions(client.rk, list.as_ptr()) } as i32)?;
            Ok(list.first_error()?)
        })
    }

    /// The next fetch of the partition starts at `offset`.
    fn seek(
        &self,
        py: Python<'_>,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout_s: f64,
    ) -> PyResult<()> {
        guarded(|| {
            let client = self.open()?;
            let mut list = TpList::with_capacity(1);
            list.add(topic, partition, offset)?;
            let timeout = millis(timeout_s);
            let error = py.allow_threads(|| {
                // SAFETY: rk and the list are live; the returned error (if any) is ours, taken below.
                SendError(unsafe {
                    rd::rd_kafka_seek_partitions(client.rk, list.as_ptr(), timeout)
                })
            });
            // SAFETY: a fresh error object from seek_partitions, or null.
            if let Some(error) = unsafe { CallError::take(error.0) } {
                return Err(error.into());
            }
            Ok(list.first_error()?)
        })
    }

    /// The offset of the next message of each partition (-1001 when none is known yet).
    fn position(&self, partitions: Vec<(String, i32)>) -> PyResult<Vec<i64>> {
        guarded(|| {
            let client = self.open()?;
            let list = TpList::from_parts(&partitions)?;
            // SAFETY: rk and the list are live; librdkafka writes each element's offset.
            check(unsafe { rd::rd_kafka_position(client.rk, list.as_ptr()) } as i32)?;
            Ok(list.elements().iter().map(|e| e.offset).collect())
        })
    }

    /// The low and high watermarks librdkafka last saw (no broker request).
    fn watermarks(&self, topic: &str, partition: i32) -> PyResult<(i64, i64)> {
        guarded(|| {
            let client = self.open()?;
            let name = CString::new(topic)
                .map_err(|_| PyValueError::new_err("topic name holds a NUL byte"))?;
            let (mut low, mut high) = (0i64, 0i64);
            // SAFETY: rk and the name are live; librdkafka writes both watermarks.
            let code = unsafe {
                rd::rd_kafka_get_watermark_offsets(
                    client.rk,
                    name.as_ptr(),
                    partition,
                    &mut low,
                    &mut high,
                )
            };
            check(code as i32)?;
            Ok((low, high))
        })
    }

    pub(crate) fn assignment(&self) -> PyResult<Vec<(String, i32)>> {
        guarded(|| {
            let client = self.open()?;
            let mut list = std::ptr::null_mut();
            // SAFETY: rk is live; on success `list` is a new list we own.
            check(unsafe { rd::rd_kafka_assignment(client.rk, &mut list) } as i32)?;
            // SAFETY: the list came from rd_kafka_assignment and nothing else owns it.
            Ok(unsafe { TpList::adopt(list) }.map_or_else(Vec::new, |l| l.pairs()))
        })
    }

    /// Leaves the group; the final revoke callback runs (and may commit) before this returns.
    pub(crate) fn close(&self, py: Python<'_>) -> PyResult<()> {
        guarded(|| {
            if self.begin_close() {
                return Ok(());
            }
            let client = &self.client;
            // SAFETY: rk is live; close serves the consumer queue, so the callbacks run on this thread.
            let code =
                py.allow_threads(|| unsafe { rd::rd_kafka_consumer_close(client.rk) } as i32);
            self.state.store(CLOSED, Ordering::Release);
            if let Some(raised) = self.client.callbacks.take().raised {
                return Err(raised);
            }
            Ok(check(code)?)
        })
    }
}

impl NativeConsumer {
    fn open(&self) -> Result<&Arc<Client>, CallError> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Err(CallError::closed()),
            _ => Ok(&self.client),
        }
    }

    /// Whether the consumer was already closed (or closing): only the first `close` does the work.
    fn begin_close(&self) -> bool {
        self.state
            .compare_exchange(OPEN, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    }

    /// The close a dropped consumer owes the group: Python callbacks run when Python is still usable
    /// (their exceptions cannot be raised anywhere, so they are reported as unraisable); otherwise the
    /// callbacks do only librdkafka's part — the partitions are still unassigned.
    fn close_at_drop(&self) {
        if self.begin_close() {
            return;
        }
        let rk = RkPtr(self.client.rk);
        // SAFETY: Py_IsInitialized may be called at any time.
        let usable =
            unsafe { pyo3::ffi::Py_IsInitialized() } != 0 && Python::with_gil(|py| !finalizing(py));
        if usable {
            Python::with_gil(|py| {
                // SAFETY: rk is live until the client drops, after this.
                py.allow_threads(move || unsafe { rd::rd_kafka_consumer_close(rk.get()) });
                if let Some(raised) = self.client.callbacks.take().raised {
                    raised.write_unraisable(py, None);
                }
            });
        } else {
            self.client.callbacks.forget_python();
            // SAFETY: rk is live; no callback calls Python any more.
            unsafe { rd::rd_kafka_consumer_close(rk.get()) };
        }
        self.state.store(CLOSED, Ordering::Release);
    }
}

impl Drop for NativeConsumer {
    fn drop(&mut self) {
        // A panic must not unwind out of a destructor that Python runs.
        let _ = catch_unwind(AssertUnwindSafe(|| self.close_at_drop()));
    }
}

fn finalizing(py: Python<'_>) -> bool {
    py.import("sys")
        .and_then(|sys| sys.call_method0("is_finalizing"))
        .and_then(|answer| answer.extract::<bool>())
        .unwrap_or(true)
}

/// Separates errored messages (destroyed here, reported as entries) from the batch.
fn split(client: &Client, slots: Vec<MessagePtr>) -> (Vec<MessagePtr>, Vec<Entry>) {
    let mut errors = Vec::new();
    let mut messages = slots;
    messages.retain(|message| match message.error() {
        0 => true,
        code => {
            errors.push(message_error(client, message, code).entry());
            message.destroy();
            false
        }
    });
    (messages, errors)
}

fn message_error(client: &Client, message: &MessagePtr, code: i32) -> CallError {
    if code == FATAL {
        return fatal_error(client.rk);
    }
    // SAFETY: for an errored message librdkafka's errstr is its payload as text, or the code's text.
    let reason = crate::error::text(unsafe { rd::rd_kafka_message_errstr(message.0) });
    CallError::with_reason(
        code,
        if reason.is_empty() {
            describe(code)
        } else {
            reason
        },
    )
}

fn nonzero_name(code: i32) -> Option<String> {
    (code != 0).then(|| crate::error::name(code))
}

fn last_error() -> i32 {
    // SAFETY: last_error reads this thread's last librdkafka error.
    unsafe { rd::rd_kafka_last_error() as i32 }
}

/// A timeout in seconds as librdkafka's milliseconds, clamped to what its `int` holds.
pub(crate) fn millis(timeout_s: f64) -> i32 {
    (timeout_s * 1000.0).clamp(0.0, i32::MAX as f64) as i32
}

/// The handle pointer, moved to the thread that runs a call without the GIL.
#[derive(Clone, Copy)]
struct RkPtr(*mut rd::rd_kafka_t);

// SAFETY: librdkafka's handle may be used from any thread.
unsafe impl Send for RkPtr {}

impl RkPtr {
    fn get(self) -> *mut rd::rd_kafka_t {
        self.0
    }
}

/// An error object returned from a call made without the GIL.
struct SendError(*mut rd::rd_kafka_error_t);

// SAFETY: an error object is plain heap memory owned by whoever holds it.
unsafe impl Send for SendError {}
