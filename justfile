set shell := ["bash", "-euo", "pipefail", "-c"]

host := "target/debug/connector-host"

# The pinned toolchain (rustup 1.28+ no longer installs it on first use; at once when it is
# there) and clang, which ring (TLS, SCRAM) needs to compile its C for wasm32-wasip2.
[private]
tools:
    scripts/clang.sh
    rustup toolchain install

# Build the connector component (wasm32-wasip2), the tests' hostile guest and the host.
build: tools
    cargo build -p kafka-connector -p hostile-guest --target wasm32-wasip2 --release
    cargo build -p connector-host

# The test broker's first build, beside the project's own (its log in ~/.cache/wasm-kafka;
# `scripts/broker.sh run` waits for it, showing the log's end if it failed).
[private]
broker-build: tools
    scripts/broker.sh install --background

# Producer and consumer throughput and memory next to librdkafka on a fresh broker, over
# plaintext and over TLS (and SASL, on brokers of its own), where TLS's time goes; Kafka to
# Kafka through `connector-host pipe`/`run` next to a librdkafka mirror, end-to-end latency,
# the sandbox's CPU cost against the same code built natively; then what an idle instance
# costs (ratios and targets, never pass/fail). librdkafka is built with OpenSSL.
# `just bench mirror latency sandbox --count 100000 --rounds 1 --seconds 5` is a quick run.
bench *ARGS: tools
    scripts/libssl.sh
    cargo build -p kafka-connector --target wasm32-wasip2 --release
    cargo build --release -p connector-host
    scripts/broker.sh run cargo run --release -p integration-tests --features bench --bin bench -- {{ARGS}}
    cargo run --release -p integration-tests --bin instances

# Unit tests (natively), then integration tests through the host against a fresh broker.
test: broker-build build
    cargo test -p connector-format -p kafka-connector -p connector-host -p connector-fuzz
    scripts/interop-setup.sh
    scripts/broker.sh run cargo test -p integration-tests --no-fail-fast

# Fuzz what the connector reads from brokers (every response, record batches of every codec):
# 1,000,000 mutated cases by default; prints cases/s, the seed and the peak allocation per input
# byte. `just fuzz --seed S --case I` runs one case again; `--cases N` sets how many.
fuzz *ARGS:
    cargo run --release -p connector-fuzz -- {{ARGS}}

# The main job: a local broker, records written through the destination, read back through the source.
demo: broker-build build
    scripts/broker.sh run scripts/demo.sh {{host}}

# 1,000,000 records Kafka to Kafka through `connector-host run` on a durable broker while
# connections are cut every few seconds, the broker is killed and restarted twice and the
# host once; then counts every record at the destination (README: Soak). ARGS: see
# tests/src/bin/soak.rs (e.g. `--records 100000 --runs 3`).
soak *ARGS: broker-build build
    scripts/broker.sh install
    cargo run -p integration-tests --bin soak -- {{ARGS}}

# Start a broker in the background and print its address (stop it with `just broker-stop`).
broker:
    scripts/broker.sh start

broker-stop:
    scripts/broker.sh stop
