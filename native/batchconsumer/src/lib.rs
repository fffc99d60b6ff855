//! A Kafka consumer that hands each fetched batch to Python as column buffers.
//!
//! confluent_kafka's `Consumer.consume` builds a Python `Message` per record (plus copies of its value and
//! key, its topic name and a timestamp tuple), and the lake writer then reads each field back out: that
//! costs more CPU than fetching the record. Here one `rd_kafka_consume_batch_queue` call fetches a batch
//! without the GIL, and `Fetched` exposes it as whole columns — offsets, timestamps and the values as
//! one Arrow `large_binary` array — so no Python object is created per record. The rare path that needs
//! a whole record (the dead-letter queue) asks for it by index.
//!
//! Rebalance, error and log callbacks are all served from the consumer queue, on the thread that called
//! `consume` or `close`; the rebalance callback may re-enter the consumer (commit, seek, pause).

mod callbacks;
mod client;
mod consumer;
mod error;
mod fetched;
mod partitions;

use pyo3::prelude::*;

/// The module's exception was created as `_kafkabatch.KafkaCallError`: give it its importable name.
const MODULE: &str = "services.common.kafka._kafkabatch";

#[pymodule]
fn _kafkabatch(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<consumer::NativeConsumer>()?;
    m.add_class::<fetched::Fetched>()?;
    let exception = m.py().get_type::<error::KafkaCallError>();
    exception.setattr("__module__", MODULE)?;
    m.add("KafkaCallError", exception)?;
    Ok(())
}

#[cfg(test)]
mod tests;
