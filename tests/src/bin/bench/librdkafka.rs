//! The yardstick: librdkafka (through rdkafka) producing and consuming the same records as
//! the connector, against the same broker.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use connector_host::wit;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::PARTITIONS;
use crate::consumer::{Consumed, LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS, READ_WAIT_MS, STALL, Tally, fresh_group};
use crate::endpoint::Endpoint;
use crate::process::{Traffic, process_cpu, traffic_to};
use crate::producer::Produced;
use crate::records::raw;

// ---------------------------------------------------------------------------------------------
// Producer.

/// Counts delivery reports; the run fails if any record failed.
#[derive(Default)]
pub(crate) struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("bench: librdkafka: {error}: {reason}");
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// librdkafka's producer as both benchmarks' yardstick sets it up: acks=all, idempotence,
/// snappy, and the Java client's (and the connector's) partitioner, murmur2, so both sides
/// fill the same partitions.
pub(crate) fn producer(at: &Endpoint) -> Result<BaseProducer<Deliveries>> {
    producer_with(at, &[])
}

/// [`producer`] with `extra` settings.
pub(crate) fn producer_with(at: &Endpoint, extra: &[(&str, &str)]) -> Result<BaseProducer<Deliveries>> {
    let mut config = at.librdkafka();
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config
        .set("client.id", "bench-librdkafka")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.codec", "snappy")
        .set("partitioner", "murmur2_random")
        .create_with_context(Deliveries::default())
        .context("cannot create the librdkafka producer")
}

/// Hands `record` to `producer`, serving its delivery reports while its queue is full.
pub(crate) fn send(
    producer: &BaseProducer<Deliveries>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("librdkafka refused a record: {e}"),
        }
    }
}

/// Serves `producer`'s delivery reports until `expected` records were reported, then
/// [`delivered`]. (rdkafka's `flush` looks at the queue in 100 ms steps: a wait per batch.)
pub(crate) fn await_deliveries(producer: &BaseProducer<Deliveries>, expected: u64) -> Result<()> {
    let ctx = producer.context();
    let start = Instant::now();
    while ctx.delivered.load(Ordering::Relaxed) + ctx.failed.load(Ordering::Relaxed) < expected {
        ensure!(
            start.elapsed() < STALL,
            "librdkafka: no delivery report for {STALL:?}"
        );
        // Returns as soon as a report is served.
        producer.poll(Duration::from_millis(10));
    }
    delivered(producer, expected)
}

/// Fails if any record failed, or fewer than `expected` were reported delivered.
pub(crate) fn delivered(producer: &BaseProducer<Deliveries>, expected: u64) -> Result<()> {
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    if failed > 0 {
        bail!(
            "librdkafka: {failed} delivery errors, the first: {}",
            ctx.first_error.lock().unwrap().clone().unwrap_or_default()
        );
    }
    ensure!(
        delivered == expected,
        "librdkafka: {delivered} of {expected} records reported delivered"
    );
    Ok(())
}

/// Writes `records` to `topic` at `at` with librdkafka (acks=all, idempotence, snappy,
/// murmur2): the time from the first send to `flush()` returning, every record delivered.
pub(crate) fn produce_librdkafka(at: &Endpoint, topic: &str, records: &[wit::Record]) -> Result<Produced> {
    let producer = producer(at)?;
    let before = traffic_to(&at.addr)?;
    let start = Instant::now();
    for (i, r) in records.iter().enumerate() {
        let record = BaseRecord::to(topic)
            .key(raw(&r.key))
            .payload(raw(&r.payload.after));
        send(&producer, record).with_context(|| format!("record {i}"))?;
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .context("librdkafka flush")?;
    let elapsed = start.elapsed();
    let after = traffic_to(&at.addr)?;
    delivered(&producer, records.len() as u64)?;
    Ok(Produced::new(elapsed, before, after))
}

/// Deletes `topic` at `at`: a producer run's records would otherwise stay in the in-memory
/// broker's memory (gigabytes per run at 1 KiB) until the bench ends.
pub(crate) fn delete_topic(at: &Endpoint, topic: &str) -> Result<()> {
    let results = admin(at, async |admin, options| {
        admin.delete_topics(&[topic], options).await
    })?;
    for r in results {
        r.map_err(|(t, e)| anyhow!("cannot delete {t}: {e}"))?;
    }
    Ok(())
}

/// Creates `topic` at `at` with `PARTITIONS` partitions whose records carry the broker's
/// time of storing them (`message.timestamp.type=LogAppendTime`).
pub(crate) fn create_log_append_topic(at: &Endpoint, topic: &str) -> Result<()> {
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))
        .set("message.timestamp.type", "LogAppendTime");
    let results = admin(at, async |admin, options| {
        admin.create_topics([&new], options).await
    })?;
    for r in results {
        r.map_err(|(t, e)| anyhow!("cannot create {t}: {e}"))?;
    }
    Ok(())
}

/// Runs `op` with a librdkafka admin client of `at`.
fn admin<T>(
    at: &Endpoint,
    op: impl AsyncFnOnce(&AdminClient<DefaultClientContext>, &AdminOptions) -> rdkafka::error::KafkaResult<T>,
) -> Result<T> {
    let admin: AdminClient<DefaultClientContext> = at
        .librdkafka()
        .create()
        .context("cannot create a librdkafka admin client")?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(op(&admin, &options))?)
}

// ---------------------------------------------------------------------------------------------
// Consumer.

/// Records in `topic` at `at` (high minus low watermark, summed over its partitions).
pub(crate) fn topic_records(at: &Endpoint, topic: &str) -> Result<u64> {
    let client: BaseProducer = at
        .librdkafka()
        .create()
        .context("cannot create a librdkafka client")?;
    let mut total = 0;
    for p in 0..PARTITIONS {
        let (low, high) = client
            .client()
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of {topic}-{p}"))?;
        total += (high - low) as u64;
    }
    Ok(total)
}

/// Notes when librdkafka got its partitions, and the process CPU time and connections to
/// the broker then.
struct Assigned {
    addr: String,
    at: Mutex<Option<(Instant, Duration, Traffic)>>,
}

impl ClientContext for Assigned {
    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("bench: librdkafka: {error}: {reason}");
    }
}

impl ConsumerContext for Assigned {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(parts) = rebalance
            && parts.count() > 0
        {
            self.at.lock().unwrap().get_or_insert_with(|| {
                (
                    Instant::now(),
                    process_cpu().unwrap_or_default(),
                    traffic_to(&self.addr).unwrap_or_default(),
                )
            });
        }
    }
}

pub(crate) fn consume_librdkafka(at: &Endpoint, topic: &str, count: usize) -> Result<Consumed> {
    let consumer: BaseConsumer<Assigned> = at
        .librdkafka()
        .set("client.id", "bench-librdkafka")
        .set("group.id", fresh_group("bench-librdkafka"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        // The one setting off its default: with 1000 ms, a partition whose prefetch queue passed
        // queued.min.messages (100,000, i.e. whenever the application falls behind the fetcher, as
        // it does here against a local broker) is not fetched for a whole second, so the run took
        // 0.95 s, 1.8 s or 2.8 s at the same CPU time. librdkafka's docs advise lowering it
        // against such ~1 s stalls; 10 ms makes the yardstick steady (and no slower).
        .set("fetch.queue.backoff.ms", LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS)
        .create_with_context(Assigned {
            addr: at.addr.clone(),
            at: Mutex::new(None),
        })
        .context("cannot create the librdkafka consumer")?;
    let subscribed = Instant::now();
    consumer.subscribe(&[topic])?;

    let mut tally = Tally::new();
    let (mut first, mut last) = (None, subscribed);
    while tally.records < count as u64 {
        match consumer.poll(Duration::from_millis(READ_WAIT_MS as u64)) {
            None => ensure!(
                last.elapsed() < STALL,
                "librdkafka: no record for {STALL:?} after {} of {count}",
                tally.records
            ),
            Some(Err(e)) => bail!("librdkafka: {e}"),
            Some(Ok(m)) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                tally.add(m.partition(), m.offset(), m.payload().map_or(0, <[u8]>::len))?;
            }
        }
    }
    let cpu_end = process_cpu()?;
    let after = traffic_to(&at.addr)?;
    let (start, cpu_start, before) = consumer
        .context()
        .at
        .lock()
        .unwrap()
        .context("librdkafka delivered records without an assignment")?;
    // Closing (a last commit, leaving the group) is outside the clock, as teardown is for ours.
    drop(consumer);
    Ok(Consumed {
        tally,
        elapsed: last - start,
        cpu: cpu_end.saturating_sub(cpu_start),
        join: start - subscribed,
        first: first.map_or(Duration::ZERO, |f| f - start),
        connections: after.connections,
        opened_on_clock: after.connections.saturating_sub(before.connections),
        wire_bytes: after.bytes.saturating_sub(before.bytes),
    })
}

// ---------------------------------------------------------------------------------------------
// Mirror (Kafka to Kafka).

/// librdkafka's mirror: a consumer in `group` hands batches of up to `batch` records to a
/// producer (the yardstick's settings, each record's key, value and timestamp); once the
/// producer reports the whole batch delivered, the batch's offsets are committed
/// (asynchronously: librdkafka's way; ours waits for its commit): at-least-once, like the pipeline
/// runner. Like a pipeline's read, a batch is what arrived within `wait` of asking, up to
/// `batch`. The producer does not linger. Stops after `max` records (never, without one); the records it moved.
pub(crate) fn mirror_librdkafka(
    at: &Endpoint,
    from: &str,
    to: &str,
    group: &str,
    batch: usize,
    wait: Duration,
    max: Option<u64>,
) -> Result<u64> {
    let consumer: BaseConsumer = at
        .librdkafka()
        .set("client.id", "bench-librdkafka-mirror")
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS)
        .create()
        .context("cannot create the librdkafka consumer")?;
    // Each batch is handed over whole and its delivery awaited: lingering (librdkafka's
    // default 5 ms) would only delay it. Ours sends a write's records at once too.
    let producer = producer_with(at, &[("linger.ms", "0")])?;
    consumer.subscribe(&[from])?;
    let mut moved = 0u64;
    let mut last = Instant::now();
    while max.is_none_or(|m| moved < m) {
        let want = max.map_or(batch, |m| (m - moved).min(batch as u64) as usize);
        // Per partition, the offset after the batch's last record there.
        let mut next = std::collections::BTreeMap::new();
        let mut n = 0;
        let mut poll_wait = wait;
        while n < want {
            let m = match consumer.poll(poll_wait) {
                None => break,
                Some(m) => m.context("librdkafka consumer")?,
            };
            let mut record = BaseRecord::to(to).payload(m.payload().unwrap_or_default());
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(ts) = m.timestamp().to_millis() {
                record = record.timestamp(ts);
            }
            send(&producer, record)?;
            next.insert(m.partition(), m.offset() + 1);
            n += 1;
            poll_wait = Duration::ZERO;
        }
        if n == 0 {
            ensure!(
                max.is_none() || last.elapsed() < STALL,
                "librdkafka mirror: no record for {STALL:?} after {moved}"
            );
            continue;
        }
        last = Instant::now();
        moved += n as u64;
        await_deliveries(&producer, moved)?;
        let mut offsets = TopicPartitionList::new();
        for (p, o) in next {
            offsets.add_partition_offset(from, p, Offset::Offset(o))?;
        }
        consumer.commit(&offsets, CommitMode::Async)?;
    }
    consumer.commit_consumer_state(CommitMode::Sync).ok();
    Ok(moved)
}
