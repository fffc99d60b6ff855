//! What can be checked without a broker: configuration handling, the consumer's lifecycle, partition
//! and offset lists, the column buffers of a batch, and that a panic reaches Python as an ordinary
//! exception. librdkafka runs for real; the interpreter is started in-process (`cargo test` links it).

use std::ptr;

use proptest::prelude::*;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::callbacks::Callbacks;
use crate::client::Client;
use crate::consumer::{millis, NativeConsumer};
use crate::error::{guarded, name, CallError, KafkaCallError};
use crate::fetched::{runs_of, validity_bits, value_ends};
use crate::partitions::{TpList, OFFSET_INVALID};

fn python() {
    pyo3::prepare_freethreaded_python();
}

/// A Python callable that takes anything and returns `None`.
fn ignore(py: Python<'_>) -> Py<PyAny> {
    py.eval(c"lambda *args: None", None, None)
        .expect("a lambda")
        .unbind()
}

fn callbacks(py: Python<'_>) -> Callbacks {
    Callbacks::new(ignore(py), ignore(py))
}

fn config(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

#[test]
fn a_property_librdkafka_does_not_know_is_a_value_error_naming_it() {
    python();
    Python::with_gil(|py| {
        let bad = config(&[("group.id", "g"), ("no.such.property", "1")]);
        let error = Client::new(bad, callbacks(py)).err().expect("refused");
        assert!(error.is_instance_of::<PyValueError>(py));
        assert!(error.to_string().contains("no.such.property"), "{error}");
        let bad_value = config(&[("group.id", "g"), ("fetch.wait.max.ms", "soon")]);
        let error = Client::new(bad_value, callbacks(py))
            .err()
            .expect("refused");
        assert!(error.to_string().contains("fetch.wait.max.ms"), "{error}");
        for nul in [("group.id\0", "g"), ("group.id", "g\0")] {
            let error = Client::new(config(&[nul]), callbacks(py))
                .err()
                .expect("refused");
            assert!(error.to_string().contains("NUL byte"), "{error}");
        }
    });
}

#[test]
fn a_consumer_without_a_broker_opens_consumes_nothing_and_closes() {
    python();
    Python::with_gil(|py| {
        let properties = PyDict::new(py);
        properties.set_item("group.id", "g").expect("set");
        properties
            .set_item("bootstrap.servers", "127.0.0.1:9")
            .expect("set");
        let consumer = NativeConsumer::new(&properties, ignore(py), ignore(py)).expect("created");
        for max_messages in [0, usize::MAX] {
            let error = consumer
                .consume(py, max_messages, 0.0)
                .err()
                .expect("refused");
            assert!(error.is_instance_of::<PyValueError>(py));
        }
        let (fetched, _errors) = consumer.consume(py, 10, 0.0).expect("nothing to consume");
        assert_eq!(fetched.__len__().expect("len"), 0);
        assert!(consumer.assignment().expect("assignment").is_empty());
        consumer.close(py).expect("closed");
        consumer.close(py).expect("a second close does nothing");
        let error = consumer.consume(py, 10, 0.0).err().expect("closed");
        assert!(error.is_instance_of::<KafkaCallError>(py));
        assert!(error.to_string().contains("closed"), "{error}");
    });
}

#[test]
fn a_panic_is_a_kafka_call_error_not_a_base_exception() {
    python();
    let outcome: PyResult<()> = guarded(|| panic!("index 7 out of range"));
    let error = outcome.expect_err("the panic is an error");
    Python::with_gil(|py| {
        assert!(error.is_instance_of::<KafkaCallError>(py));
        assert!(error.is_instance_of::<pyo3::exceptions::PyException>(py));
        let args: (i32, String, String, bool, bool) = error
            .value(py)
            .getattr("args")
            .expect("args")
            .extract()
            .expect("five fields");
        assert_eq!(args.1, "_FAIL");
        assert!(
            args.2
                .ends_with("failed inside itself: index 7 out of range"),
            "{}",
            args.2
        );
        assert!(!args.3 && !args.4);
    });
    let panicked = CallError::panicked(&String::from("owned text"));
    assert!(panicked.reason.ends_with("owned text"));
}

#[test]
fn error_names_never_invent_a_code() {
    assert_eq!(name(0), "NO_ERROR");
    assert_eq!(name(-185), "_TIMED_OUT");
    assert_eq!(name(123_456), "ERR_123456"); // a broker code newer than librdkafka
    assert_eq!(name(i32::MIN), format!("ERR_{}", i32::MIN));
    assert_eq!(
        CallError::code(123_456).entry().2,
        "unknown error code 123456"
    );
}

#[test]
fn timeouts_are_clamped_to_what_librdkafka_takes() {
    assert_eq!(millis(1.5), 1_500);
    assert_eq!(millis(-3.0), 0);
    assert_eq!(millis(f64::NAN), 0);
    assert_eq!(millis(f64::INFINITY), i32::MAX);
    assert_eq!(millis(1e300), i32::MAX);
}

#[test]
fn partition_lists_keep_topics_partitions_and_offsets() {
    python();
    let parts = vec![
        ("orders".to_owned(), 0, 42),
        ("orders".to_owned(), 5, i64::MAX),
        ("caf\u{e9}.public.x".to_owned(), 2, -2),
    ];
    let list = TpList::from_offsets(&parts).expect("a list");
    let read: Vec<(String, i32, i64)> = list
        .elements()
        .iter()
        .map(|e| (crate::partitions::topic_of(e), e.partition, e.offset))
        .collect();
    assert_eq!(read, parts);
    assert!(list.first_error().is_ok());
    let pairs = TpList::from_parts(&[("t".to_owned(), 1)]).expect("a list");
    assert_eq!(pairs.pairs(), vec![("t".to_owned(), 1)]);
    assert_eq!(pairs.elements()[0].offset, OFFSET_INVALID);
    assert!(TpList::from_parts(&[("t\0".to_owned(), 1)]).is_err());
    assert!(TpList::with_capacity(0).elements().is_empty());
}

#[test]
fn the_first_partition_error_names_its_partition() {
    let list =
        TpList::from_offsets(&[("a".to_owned(), 0, 1), ("b".to_owned(), 3, 1)]).expect("a list");
    // SAFETY: the list holds two elements; `err` is a C enum stored as a 32-bit integer.
    unsafe {
        let second = (*list.as_ptr()).elems.add(1);
        ptr::addr_of_mut!((*second).err).cast::<i32>().write(25); // UNKNOWN_MEMBER_ID
    }
    let error = list.first_error().expect_err("the second element failed");
    assert_eq!(error.code, 25);
    assert!(error.reason.starts_with("b [3]: "), "{}", error.reason);
}

#[test]
fn runs_split_where_the_key_changes() {
    assert!(runs_of(Vec::<u8>::new()).is_empty());
    assert_eq!(
        runs_of([1, 1, 2, 1, 1, 1]),
        vec![(1, 0, 2), (2, 2, 3), (1, 3, 6)]
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn runs_cover_the_batch_in_order(keys in proptest::collection::vec(0u8..3, 0..200)) {
        let runs = runs_of(keys.iter().copied());
        let mut next = 0;
        for (index, (key, start, stop)) in runs.iter().enumerate() {
            prop_assert_eq!(*start, next);
            prop_assert!(start < stop);
            prop_assert!(keys[*start..*stop].iter().all(|k| k == key));
            if index > 0 {
                prop_assert_ne!(runs[index - 1].0, *key);
            }
            next = *stop;
        }
        prop_assert_eq!(next, keys.len());
    }

    #[test]
    fn value_buffers_are_arrows_large_binary_layout(
        values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 0..100)
    ) {
        let payloads: Vec<Option<&[u8]>> = values.iter().map(Option::as_deref).collect();
        let bits = validity_bits(&payloads);
        prop_assert_eq!(bits.len(), values.len().div_ceil(8));
        for (i, value) in values.iter().enumerate() {
            prop_assert_eq!(bits[i / 8] >> (i % 8) & 1 == 1, value.is_some());
        }
        let ends = value_ends(&payloads).expect("fits");
        prop_assert_eq!(ends.len(), values.len() + 1);
        prop_assert_eq!(ends[0], 0);
        for (i, value) in values.iter().enumerate() {
            prop_assert_eq!((ends[i + 1] - ends[i]) as usize, value.as_ref().map_or(0, Vec::len));
        }
    }
}
