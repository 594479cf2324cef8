#!/usr/bin/env python3
"""A real Kafka client (librdkafka, through confluent-kafka) for the interop tests.

  kclient.py produce --broker B --topic T --codec none|gzip|snappy|lz4|zstd [--acks all]
                     [--partitioner murmur2_random]     < records.jsonl
  kclient.py consume --broker B --topic T --count N --timeout SECONDS  > records.jsonl

A record is one JSON line; bytes are base64 strings, null is null:
  produce reads   {"key", "value", "headers": [[name, value], ...], "partition" (optional)}
  consume prints  {"partition", "offset", "key", "value", "headers", "timestamp" (ms)}
Either exits non-zero on a failure: a record not delivered, fewer than N records in time.
Run it with the venv's python that scripts/interop-setup.sh makes.
"""

import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition


def b64(data):
    return None if data is None else base64.b64encode(data).decode()


def unb64(text):
    return None if text is None else base64.b64decode(text)


def produce(args):
    producer = Producer({
        "bootstrap.servers": args.broker,
        "compression.type": args.codec,
        "acks": args.acks,
        "partitioner": args.partitioner,
    })
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
    left = producer.flush(30)
    if left:
        errors.append(f"{left} of {sent} records not delivered within 30s")
    for e in errors:
        print(f"kclient produce: {e}", file=sys.stderr)
    return 1 if errors else 0


def consume(args):
    consumer = Consumer({
        "bootstrap.servers": args.broker,
        "group.id": f"kclient-{uuid.uuid4()}",  # never joined: partitions are assigned
        "enable.auto.commit": False,
        "check.crcs": True,
    })
    topic = consumer.list_topics(args.topic, timeout=10).topics[args.topic]
    if topic.error is not None:
        print(f"kclient consume: topic {args.topic}: {topic.error}", file=sys.stderr)
        return 1
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in topic.partitions])
    deadline = time.monotonic() + args.timeout
    got = 0
    while got < args.count and time.monotonic() < deadline:
        msg = consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))
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
    args = parser.parse_args()
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()
