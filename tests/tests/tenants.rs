//! Many tenants in one host process (`connector-host run`): hostile guests are stopped,
//! each with the right error, while a good pipeline beside them moves every record.

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::Duration;

use integration_tests::pipelines::*;
use integration_tests::*;

/// A pipeline of tenant `evil` whose source is the hostile guest in `mode`, writing what
/// it gets (a leak, if anything) to `<name>.jsonl`. The component must be in the pipeline
/// file's folder (`hostile_in`).
fn hostile(name: &str, settings: &str, limits: &str) -> String {
    hostile_with(name, settings, &format!("limits = {{ {limits} }}\n"))
}

/// `hostile`, with `extra` lines in its pipeline table (limits, deadlines). Not restarted:
/// the test is about each failure, not about trying again.
fn hostile_with(name: &str, settings: &str, extra: &str) -> String {
    format!(
        "[[pipeline]]\nname = \"{name}\"\ntenant = \"evil\"\nrestart = {{ attempts = 0 }}\n{extra}\
         [pipeline.source]\ntype = \"component\"\ncomponent = \"hostile_guest.wasm\"\nsettings = {{ {settings} }}\n\
         [pipeline.destination]\ntype = \"file\"\npath = \"{name}.jsonl\"\n\n"
    )
}

/// Copies the hostile guest into `dir`, where pipeline files may name it.
fn hostile_in(dir: &std::path::Path) {
    std::fs::copy(hostile_component_path(), dir.join("hostile_guest.wasm")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_are_stopped_while_a_good_pipeline_moves_every_record() {
    const N: usize = 20_000;
    let (from, to) = (new_topic("tenants-in", 3), new_topic("tenants-out", 2));
    let sent = fill(&from, N, "good").await;
    let dir = scratch("hostile");
    hostile_in(&dir);
    let secret_file = dir.join("secret.txt");
    std::fs::write(&secret_file, "s3cret-file").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();

    let mut file =
        format!("[[pipeline]]\nname = \"mirror\"\ntenant = \"good\"\nmax-records = {N}\nbatch = 500\n")
            + &allow_broker_line();
    file += &kafka_end(
        "source",
        &format!("topics = \"{from}\", readFromBeginning = true, groupID = \"{from}\""),
    );
    file += &kafka_end("destination", &format!("topic = \"{to}\""));
    file += "\n";
    file += &hostile("spin", "mode = \"spin\"", "cpu = \"300ms\"");
    file += &hostile("spin-calling", "mode = \"spin-calling\"", "cpu = \"300ms\"");
    file += &hostile("grow", "mode = \"grow\"", "memory = \"32MiB\"");
    file += &hostile("trap", "mode = \"trap\"", "");
    file += &hostile("handles", "mode = \"handles\"", "handles = 50");
    file += &hostile(
        "connect",
        &format!("mode = \"connect\", target = \"127.0.0.1:{port}\""),
        "",
    );
    file += &hostile("env", "mode = \"env\", name = \"HOSTILE_SECRET\"", "");
    let read_file = format!("mode = \"read-file\", path = \"{}\"", secret_file.display());
    file += &hostile("file", &read_file, "");
    // Attacks on the host itself (issue: a hostile tenant cannot hurt another tenant).
    file += &hostile("alias-batch", "mode = \"alias-batch\"", "memory = \"64MiB\"");
    file += &hostile("over-max", "mode = \"over-max\"", "");
    file += &hostile("log-flood", "mode = \"log-flood\"", "log-lines = 5");
    file += &hostile("error-forge", "mode = \"error-forge\"", "");
    file += &hostile("sockets", "mode = \"sockets\"", "sockets = 20");
    file += &hostile("dns", "mode = \"dns\", domain = \"exfil.example\"", "");
    let metrics_port = free_port();
    // Allowed the broker's address, it may not reach another port there (the host's metrics).
    file += &hostile_with(
        "metrics",
        &format!("mode = \"connect\", target = \"127.0.0.1:{metrics_port}\""),
        &allow_broker_line(),
    );
    // A tenant's component refusing its settings fails its pipeline, not the whole file.
    file += &hostile("bad-config", "mode = \"bogus\"", "");
    // So does one that is no component at all.
    std::fs::write(dir.join("garbage.wasm"), b"not a component").unwrap();
    file += &hostile("garbage", "mode = \"quiet\"", "").replace("hostile_guest.wasm", "garbage.wasm");
    for call in ["validate", "open", "read"] {
        let deadline = format!("deadlines = {{ {call} = \"2s\" }}\n");
        file += &hostile_with(
            &format!("hang-{call}"),
            &format!("mode = \"hang-{call}\""),
            &deadline,
        );
    }
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, &file).unwrap();

    let mut host = run_host(&path, &["--metrics", &format!("127.0.0.1:{metrics_port}")]);
    host.env("HOSTILE_SECRET", "s3cret-env");
    let (code, stderr, peak) = finish_measured(&mut host, Duration::from_secs(120)).await;

    eprintln!("PEAK {} MiB\n{stderr}", peak >> 20);
    assert_eq!(code, 1, "failed pipelines make the exit code 1:\n{stderr}");
    let good = summary(&stderr, "good/mirror");
    assert!(
        good.contains(&format!("finished ({N} read, {N} written, 0 errors)")),
        "{good}"
    );
    let expected = [
        ("spin", "connector evil/spin/source stopped: CPU limit: computed"),
        (
            "spin-calling",
            "connector evil/spin-calling/source stopped: CPU limit: computed",
        ),
        ("grow", "connector evil/grow/source stopped: memory limit:"),
        ("trap", "connector evil/trap/source stopped: trapped:"),
        (
            "handles",
            "connector evil/handles/source stopped: handle limit: holds 50 open handles",
        ),
        (
            "connect",
            &format!("the sandbox denied TcpConnect 127.0.0.1:{port}"),
        ),
        ("env", "env HOSTILE_SECRET: not visible"),
        ("file", &format!("read {}:", secret_file.display())),
        (
            "alias-batch",
            "connector evil/alias-batch/source stopped: read-batch: the connector sent records that expand to more than 64 MiB",
        ),
        (
            "over-max",
            "connector evil/over-max/source stopped: read-batch: the connector sent 1001 records, more than the 1000 asked for",
        ),
        (
            "log-flood",
            "connector evil/log-flood/source stopped: log limit: more than 10000 lines",
        ),
        (
            "error-forge",
            "boom\\npipeline good/mirror failed (0 read, 0 written, 9 errors): forged\\u{1b}[2J",
        ),
        (
            "sockets",
            "connector evil/sockets/source stopped: socket limit: holds 20 open sockets",
        ),
        ("dns", "200 lookups refused"),
        (
            "metrics",
            &format!("the sandbox denied TcpConnect 127.0.0.1:{metrics_port}"),
        ),
        (
            "bad-config",
            "source: invalid config \"mode\": unknown mode \"bogus\"",
        ),
        ("garbage", "cannot compile component"),
        (
            "hang-validate",
            "connector evil/hang-validate/source stopped: deadline: validate did not return within 2s",
        ),
        (
            "hang-open",
            "connector evil/hang-open/source stopped: deadline: open did not return within 2s",
        ),
        (
            "hang-read",
            "connector evil/hang-read/source stopped: deadline: read did not return within 2500ms",
        ),
    ];
    let mut report = String::new();
    for (name, cause) in expected {
        let line = summary(&stderr, &format!("evil/{name}"));
        if !(line.contains(" failed (0 read, 0 written") && line.contains(cause)) {
            writeln!(report, "evil/{name}: expected {cause:?} in {line:?}").unwrap();
        }
        let leaked = std::fs::read_to_string(dir.join(format!("{name}.jsonl"))).unwrap_or_default();
        assert!(leaked.is_empty(), "evil/{name} got something out: {leaked}");
    }
    assert!(report.is_empty(), "{report}");
    assert!(
        stderr.contains("hostile guest panics on purpose"),
        "the panic message is shown"
    );
    // No guest wrote a line of its own: its newlines and escape sequences are shown escaped.
    assert!(
        !stderr.contains('\x1b'),
        "an escape sequence reached the terminal"
    );
    for line in stderr.lines() {
        assert!(
            !line.starts_with("pipeline good/mirror failed"),
            "a guest forged a line: {line}"
        );
    }
    assert!(
        stderr.contains("innocent\\npipeline good/mirror failed"),
        "the forged log line is shown escaped"
    );
    assert!(
        stderr.contains("sandbox: denied name lookup s3cret-0.exfil.example"),
        "the lookup is refused by name"
    );
    // Every guest's memory is bounded, and what its batches expand to in the host: the
    // alias batch alone would be 48 GiB.
    const PEAK: u64 = 1536 << 20;
    assert!(
        peak < PEAK,
        "the host peaked at {} MiB (bound {} MiB)",
        peak >> 20,
        PEAK >> 20
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "nothing reached the listener outside the allowlist"
    );
    assert_eq!(topic_values(&to, N).await, sorted(sent));
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_of_several_tenants_run_to_completion_and_every_record_arrives() {
    const N: usize = 3000;
    let dir = scratch("tenants");
    let mut file = String::new();
    let mut checks = Vec::new();
    for tenant in ["acme", "globex", "initech"] {
        let (from, to) = (new_topic(tenant, 3), new_topic(&format!("{tenant}-out"), 1));
        checks.push((to.clone(), sorted(fill(&from, N, tenant).await)));
        write!(
            file,
            "[[pipeline]]\nname = \"mirror\"\ntenant = \"{tenant}\"\nmax-records = {N}\n{}",
            allow_broker_line()
        )
        .unwrap();
        file += "limits = { memory = \"128MiB\", cpu = \"5s\", handles = 200 }\n";
        file += &kafka_end(
            "source",
            &format!("topics = \"{from}\", readFromBeginning = true, groupID = \"{from}\""),
        );
        file += &kafka_end("destination", &format!("topic = \"{to}\""));
        file += "\n";
    }
    // A file into Kafka and Kafka into a file, for a fourth tenant.
    let lines: String = (0..N)
        .map(|i| format!("{{\"payload\":{{\"after\":{{\"n\":{i}}}}}}}\n"))
        .collect();
    std::fs::write(dir.join("in.jsonl"), &lines).unwrap();
    let (loaded, out) = (new_topic("hooli-loaded", 2), "out.jsonl");
    file += "[[pipeline]]\nname = \"load\"\ntenant = \"hooli\"\n";
    file += &allow_broker_line();
    file += "[pipeline.source]\ntype = \"file\"\npath = \"in.jsonl\"\n";
    file += &kafka_end("destination", &format!("topic = \"{loaded}\""));
    file += &format!("\n[[pipeline]]\nname = \"dump\"\ntenant = \"hooli\"\nmax-records = {N}\n");
    file += &allow_broker_line();
    file += &kafka_end(
        "source",
        &format!("topics = \"{loaded}\", readFromBeginning = true"),
    );
    file += &format!("[pipeline.destination]\ntype = \"file\"\npath = \"{out}\"\n");
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, &file).unwrap();

    let (code, stderr) = finish(&mut run_host(&path, &[]), Duration::from_secs(120)).await;
    assert_eq!(code, 0, "{stderr}");
    for id in [
        "acme/mirror",
        "globex/mirror",
        "initech/mirror",
        "hooli/load",
        "hooli/dump",
    ] {
        let line = summary(&stderr, id);
        assert!(
            line.contains(&format!("finished ({N} read, {N} written, 0 errors)")),
            "{line}"
        );
    }
    for (to, sent) in checks {
        assert_eq!(topic_values(&to, N).await, sent);
    }
    let mut dumped: Vec<String> = std::fs::read_to_string(dir.join(out))
        .unwrap()
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            let after = r.pointer("/payload/after").and_then(|v| v.as_str()).unwrap();
            use base64::Engine as _;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(after).unwrap()).unwrap()
        })
        .collect();
    dumped.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("{{\"n\":{i}}}")).collect();
    expected.sort();
    assert_eq!(dumped, expected);
}

#[tokio::test]
async fn a_bad_pipeline_file_is_refused_with_line_numbers_before_anything_starts() {
    let (from, to) = (new_topic("bad-in", 1), new_topic("bad-out", 1));
    fill(&from, 10, "bad").await;
    let dir = scratch("bad");
    let mut file = String::from("[[pipeline]]\nname = \"ok\"\ntenant = \"t\"\n") + &allow_broker_line();
    file += &kafka_end(
        "source",
        &format!("topics = \"{from}\", readFromBeginning = true"),
    );
    file += &kafka_end("destination", &format!("topic = \"{to}\""));
    // Line 11 on: a pipeline whose destination config the connector refuses.
    file += "\n[[pipeline]]\nname = \"acks\"\ntenant = \"t\"\n";
    file += &allow_broker_line();
    file += &kafka_end("source", &format!("topics = \"{from}\""));
    file += &kafka_end("destination", &format!("topic = \"{to}\", acks = \"2\""));
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, &file).unwrap();

    let (code, stderr) = finish(&mut run_host(&path, &[]), Duration::from_secs(60)).await;
    assert_eq!(code, 1);
    let at = format!(
        "{}:21: pipeline t/acks destination: invalid config \"acks\"",
        path.display()
    );
    assert!(stderr.contains(&at), "{stderr}");
    assert!(!stderr.contains("pipeline t/ok"), "nothing started: {stderr}");
    assert!(topic_values(&to, 0).await.is_empty(), "nothing was written");

    std::fs::write(
        &path,
        file.replace("tenant = \"t\"\nallow", "tenant = \"t\"\nbatchh = 5\nallow"),
    )
    .unwrap();
    let (code, stderr) = finish(&mut run_host(&path, &[]), Duration::from_secs(60)).await;
    assert_eq!(code, 1);
    let at = format!("{}:4: ", path.display());
    assert!(stderr.contains(&at) && stderr.contains("batchh"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_hoarding_sockets_stop_at_their_caps_and_the_hosts_budget_and_the_host_goes_on() {
    const N: usize = 500;
    let dir = scratch("sockets");
    hostile_in(&dir);
    let mut file = String::new();
    // hoard-a may hold more than the host's budget, so only the budget can stop it; hoard-b
    // stops at its own cap or at the budget, as the two happen to interleave.
    file += &hostile("hoard-a", "mode = \"sockets\"", "sockets = 200");
    file += &hostile("hoard-b", "mode = \"sockets\"", "sockets = 100");
    let lines: String = (0..N)
        .map(|i| format!("{{\"payload\":{{\"after\":{{\"n\":{i}}}}}}}\n"))
        .collect();
    std::fs::write(dir.join("in.jsonl"), &lines).unwrap();
    file += "[[pipeline]]\nname = \"copy\"\ntenant = \"good\"\n";
    file += "[pipeline.source]\ntype = \"file\"\npath = \"in.jsonl\"\n";
    file += "[pipeline.destination]\ntype = \"file\"\npath = \"out.jsonl\"\n";
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, &file).unwrap();

    // 400 descriptors: the host keeps 256 for itself, so its sockets budget is 144.
    let mut limited = run_host_in(&path, &[], &[], "ulimit -n 400 && exec \"$0\" \"$@\"");
    let (code, stderr) = finish(&mut limited, Duration::from_secs(60)).await;

    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "the pipelines' socket limits and open files add up to 304, more than the host's budget of 144"
        ),
        "{stderr}"
    );
    let causes: Vec<&str> = ["evil/hoard-a", "evil/hoard-b"]
        .iter()
        .map(|id| summary(&stderr, id))
        .collect();
    let budget = "stopped: host socket budget: the host holds 144 sockets";
    let own = "stopped: socket limit: holds 100 open sockets";
    assert!(causes[0].contains(budget), "{causes:?}");
    assert!(
        causes[1].contains(budget) || causes[1].contains(own),
        "{causes:?}"
    );
    let good = summary(&stderr, "good/copy");
    assert!(
        good.contains(&format!("finished ({N} read, {N} written, 0 errors)")),
        "{good}"
    );
}

#[tokio::test]
async fn with_tenant_folders_a_tenant_reaches_only_its_own_files() {
    let dir = scratch("tenant-folders");
    let lines: String = (0..10)
        .map(|i| format!("{{\"payload\":{{\"after\":{{\"n\":{i}}}}}}}\n"))
        .collect();
    std::fs::write(tenant_dir(&dir, "hooli").join("in.jsonl"), &lines).unwrap();
    let copy = |tenant: &str| {
        format!(
            "[[pipeline]]\nname = \"copy\"\ntenant = \"{tenant}\"\n\
             [pipeline.source]\ntype = \"file\"\npath = \"in.jsonl\"\n\
             [pipeline.destination]\ntype = \"file\"\npath = \"out.jsonl\"\n\n"
        )
    };
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, copy("hooli")).unwrap();
    let (code, stderr) = finish(
        &mut run_host(&path, &["--tenant-folders"]),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let out = std::fs::read_to_string(dir.join("hooli/out.jsonl")).unwrap();
    assert_eq!(out.lines().count(), 10);

    // Another tenant naming the same path finds its own folder, not hooli's file.
    std::fs::write(&path, copy("hooli") + &copy("mallory")).unwrap();
    let (code, stderr) = finish(
        &mut run_host(&path, &["--tenant-folders"]),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    let theirs = dir.join("mallory/in.jsonl");
    assert!(
        stderr.contains(&format!(
            "pipeline mallory/copy: cannot read {}",
            theirs.display()
        )),
        "{stderr}"
    );
}
