#!/usr/bin/env python3
"""A real Kafka client (librdkafka, through confluent-kafka) for the interop tests.

  kclient.py produce --broker B --topic T --codec none|gzip|snappy|lz4|zstd [--acks all]
                     [--partitioner murmur2_random]     < records.jsonl
  kclient.py consume --broker B --topic T --count N --timeout SECONDS  > records.jsonl

Either takes more librdkafka settings, `--config KEY=VALUE` (repeatable), e.g.
  --config security.protocol=SASL_SSL --config sasl.mechanisms=SCRAM-SHA-256
  --config sasl.username=U --config sasl.password=P --config ssl.ca.location=ca.pem
and `--fail-fast`: the first error librdkafka reports (authentication, TLS, transport) ends
it at once, non-zero, instead of waiting for records that cannot come.

A record is one JSON line; bytes are base64 strings, null is null:
  produce reads   {"key", "value", "headers": [[name, value], ...], "partition" (optional)}
  consume prints  {"partition", "offset", "key", "value", "headers", "timestamp" (ms)}
Either exits non-zero on a failure: a record not delivered, fewer than N records in time
(with --fail-fast: any error librdkafka reports), printing librdkafka's errors on stderr.
Run it with the venv's python that scripts/interop-setup.sh makes.
"""

import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition


class Failed(Exception):
    """An error librdkafka reported, with --fail-fast."""


class Errors:
    """librdkafka's error callback: prints what it reports; with --fail-fast, `check` then
    raises."""

    def __init__(self, command, fail_fast):
        self.command = command
        self.fail_fast = fail_fast
        self.seen = []

    def __call__(self, err):
        print(f"kclient {self.command}: librdkafka error: {err}", file=sys.stderr, flush=True)
        self.seen.append(err)

    def check(self):
        if self.fail_fast and self.seen:
            raise Failed(str(self.seen[0]))


def settings(args, errors, own):
    """librdkafka's configuration: the command's `own`, the broker, then --config's."""
    conf = {"bootstrap.servers": args.broker, "error_cb": errors}
    conf.update(own)
    for pair in args.config:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--config {pair!r}: expected KEY=VALUE")
        conf[key] = value
    return conf


def b64(data):
    return None if data is None else base64.b64encode(data).decode()


def unb64(text):
    return None if text is None else base64.b64decode(text)


def produce(args):
    reported = Errors("produce", args.fail_fast)
    producer = Producer(settings(args, reported, {
        "compression.type": args.codec,
        "acks": args.acks,
        "partitioner": args.partitioner,
    }))
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(f"partition {msg.partition()}: {err}")

    sent = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        rec = json.loads(line)
        kwargs = {}
        if rec.get("partition") is not None:
            kwargs["partition"] = rec["partition"]
        producer.produce(
            args.topic,
            key=unb64(rec.get("key")),
            value=unb64(rec.get("value")),
            headers=[(name, unb64(value)) for name, value in rec.get("headers", [])],
            on_delivery=delivered,
            **kwargs,
        )
        sent += 1
        producer.poll(0)
        reported.check()
    deadline = time.monotonic() + 30
    while len(producer) > 0 and time.monotonic() < deadline:
        producer.poll(0.1)
        reported.check()
    left = len(producer)
    if left:
        errors.append(f"{left} of {sent} records not delivered within 30s")
    for e in errors:
        print(f"kclient produce: {e}", file=sys.stderr)
    return 1 if errors else 0


def metadata(consumer, topic, errors):
    """The topic's metadata, within 10 s (sooner with --fail-fast and an error)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return consumer.list_topics(topic, timeout=1).topics[topic]
        except KafkaException:
            if time.monotonic() >= deadline:
                raise
        consumer.poll(0)  # serves the error callback
        errors.check()


def consume(args):
    reported = Errors("consume", args.fail_fast)
    consumer = Consumer(settings(args, reported, {
        "group.id": f"kclient-{uuid.uuid4()}",  # never joined: partitions are assigned
        "enable.auto.commit": False,
        "check.crcs": True,
    }))
    topic = metadata(consumer, args.topic, reported)
    if topic.error is not None:
        print(f"kclient consume: topic {args.topic}: {topic.error}", file=sys.stderr)
        return 1
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in topic.partitions])
    deadline = time.monotonic() + args.timeout
    got = 0
    while got < args.count and time.monotonic() < deadline:
        msg = consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))
        reported.check()
        if msg is None:
            continue
        if msg.error() is not None:
            print(f"kclient consume: {msg.error()}", file=sys.stderr)
            continue
        print(json.dumps({
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": b64(msg.key()),
            "value": b64(msg.value()),
            "headers": [[name, b64(value)] for name, value in msg.headers() or []],
            "timestamp": msg.timestamp()[1],
        }), flush=True)
        got += 1
    consumer.close()
    if got < args.count:
        print(f"kclient consume: {got} of {args.count} records in {args.timeout}s", file=sys.stderr)
        return 1
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("produce")
    p.add_argument("--broker", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--codec", required=True, choices=["none", "gzip", "snappy", "lz4", "zstd"])
    p.add_argument("--acks", default="all")
    p.add_argument("--partitioner", default="consistent_random")
    p.set_defaults(run=produce)
    c = commands.add_parser("consume")
    c.add_argument("--broker", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--count", required=True, type=int)
    c.add_argument("--timeout", required=True, type=float)
    c.set_defaults(run=consume)
    for command in (p, c):
        command.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
        command.add_argument("--fail-fast", action="store_true")
    args = parser.parse_args()
    try:
        sys.exit(args.run(args))
    except Failed as e:
        print(f"kclient {args.command}: failed: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
