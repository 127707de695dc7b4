//! The benchmark behind the speed and memory goals: it runs the real `inboxd` binary as a child
//! process against an S3 endpoint and prints one markdown table.
//!
//!     cargo bench --bench pipeline
//!
//! By default the endpoint is an in-process s3s-fs server (tests/support/s3.rs) with an optional
//! per-request latency on every write request. Set `BENCH_S3_ENDPOINT` and `BENCH_S3_BUCKET` (plus
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN` and
//! `BENCH_S3_REGION`) to measure against any other S3 endpoint instead; no latency can be injected
//! there, and the objects are left under a fresh `inboxd-bench-<time>/` prefix.
//!
//! Workloads (all in one run):
//! - W1: 20 × 1 MiB with ~100 ms added to every upload request, `inboxd once` with
//!   upload.concurrency = 1 and with the default; upload phase of each and the ratio.
//! - W2: 2 000 × 4 KiB, no added latency: daemon files/s against a bare aws-sdk-s3 PUT loop
//!   sending the same requests (SHA-256 checksum, sha256 metadata, If-None-Match) from memory at
//!   the same concurrency, alternating, median of 3 each; and, when `rclone` is installed
//!   (Debian: apt-get install rclone), `rclone copy --transfers 32` of the same files to the
//!   same endpoint, its whole run set beside the daemon's whole `once` run.
//! - W3: one 1 GiB file: MB/s of the upload phase and the daemon's peak RSS (wait4).
//! - W4: 40 × 64 KiB dropped one at a time into `inboxd run`, each written beside the inbox and
//!   renamed in (the rename-in fast path on a local disk: a second look, no settle window):
//!   drop → object latency, p50 / p99, target at most 200 ms beyond the settle window. W4c: 40 PDFs of about 64 KiB, each created in the
//!   inbox, written and closed (a scanner, a copy), with the default settle (2 s): drop →
//!   object latency, p50 / p99 (the close-write fast path; `BENCH_ONLY=w4c` runs it alone).
//! - W5: 64 × 64 KiB waiting in `inboxd run` through a 70 s outage (connections refused) and a
//!   45 s one (server hung: connections accepted, nothing answered): time from the server's
//!   return until the inbox is drained, and the daemon's WARN/ERROR lines
//!   (`workloads/outage.rs`; in-process server only, about 2.5 minutes).
//!
//! `BENCH_ONLY=w2,w3` runs a subset; `BENCH_KEEP=1` keeps every workspace (config, daemon stdout
//! and stderr, done/) and prints where.
//!
//! The upload phase is the daemon's own `busy_ms` (first file reaching the upload stage → last
//! outcome recorded), logged with its final "inboxd stopped" line; settle time is not in it.

#[path = "workloads/outage.rs"]
mod outage;
#[path = "../tests/support/s3.rs"]
mod s3;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// The daemon's default `upload.concurrency` (W2's bare loop runs at the same limit).
const DEFAULT_CONCURRENCY: usize = inboxd::config::DEFAULT_CONCURRENCY;
/// Added to every PutObject / UploadPart / Create- and CompleteMultipartUpload in W1.
const W1_LATENCY: Duration = Duration::from_millis(100);
const W1_FILES: usize = 20;
const W2_FILES: usize = 2000;
const W2_ROUNDS: usize = 3;
const W4_FILES: usize = 40;
const W4_SETTLE: Duration = Duration::from_millis(500);
const W4_GAP: Duration = Duration::from_millis(150);
/// The default `settle`: W4c shows what a closing writer gets without any tuning.
const W4C_SETTLE: &str = "2s";
const LOCAL_BUCKET: &str = "inboxd-bench";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ep = rt.block_on(Endpoint::from_env());
    println!("inboxd benchmark: {}", ep.describe());

    let mut rows = Vec::new();
    let mut sanity = Vec::new();

    type Workload = fn(&tokio::runtime::Runtime, &Endpoint, &mut Vec<Row>, &mut Vec<String>);
    let workloads: [(&str, Workload); 6] = [
        ("w1", w1),
        ("w2", w2),
        ("w3", w3),
        ("w4", w4),
        ("w4c", w4c),
        ("w5", outage::w5),
    ];
    // BENCH_ONLY=w2,w4 runs a subset (while profiling one workload).
    let only = std::env::var("BENCH_ONLY")
        .unwrap_or_default()
        .to_lowercase();
    for (name, workload) in workloads {
        if !only.is_empty() && !only.split(',').any(|w| w.trim() == name) {
            continue;
        }
        let t = Instant::now();
        workload(&rt, &ep, &mut rows, &mut sanity);
        eprintln!(
            "[bench] {} done in {:.1?}",
            name.to_uppercase(),
            t.elapsed()
        );
    }

    println!();
    for line in &sanity {
        println!("{line}");
    }
    println!();
    println!(
        "{} · `{}` · {} cores · endpoint: {}",
        utc_now(),
        uname(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        ep.describe()
    );
    println!();
    println!("| work | measured | target | met? |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!("| {} | {} | {} | {} |", r.work, r.measured, r.target, r.met);
    }
    if let Kind::Remote = ep.kind {
        println!();
        println!(
            "objects left in bucket {} under prefix {}",
            ep.bucket, ep.run_prefix
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Report rows
// ---------------------------------------------------------------------------------------------

struct Row {
    work: String,
    measured: String,
    target: String,
    met: String,
}

fn push_row(
    rows: &mut Vec<Row>,
    work: impl Into<String>,
    measured: impl Into<String>,
    target: &str,
    met: Option<bool>,
) {
    rows.push(Row {
        work: work.into(),
        measured: measured.into(),
        target: if target.is_empty() { "—" } else { target }.to_owned(),
        met: match met {
            Some(true) => "yes".into(),
            Some(false) => "**no**".into(),
            None => "—".into(),
        },
    });
}

// ---------------------------------------------------------------------------------------------
// W1: latency-bound batch, concurrency 1 vs default
// ---------------------------------------------------------------------------------------------

fn w1(rt: &tokio::runtime::Runtime, ep: &Endpoint, rows: &mut Vec<Row>, sanity: &mut Vec<String>) {
    let injected = ep.set_latency(Some(W1_LATENCY));
    let mut phases = Vec::new();
    for (label, concurrency) in [("c1", Some(1)), ("default", None)] {
        let work = Work::new("w1");
        let prefix = format!("{}w1-{label}/", ep.run_prefix);
        let mut files = Vec::new();
        for i in 0..W1_FILES {
            let name = format!("scan-{i:02}.pdf");
            write_random(&work.inbox.join(&name), MIB, 0x1000 + i as u64);
            files.push((name, MIB));
        }
        work.write_config(
            ep,
            &prefix,
            &Opts {
                concurrency,
                settle: "50ms",
                window: Some("50ms"),
            },
        );
        let daemon = Daemon::spawn(ep, &work, "once", &format!("W1 {label}"));
        let exit = daemon.wait(Duration::from_secs(120));
        daemon.expect_success(&exit);
        let stop = daemon.stopped();
        daemon.expect_uploaded(&stop, W1_FILES);
        sanity.push(rt.block_on(check_outcome(
            ep,
            &work,
            &prefix,
            &files,
            &format!(
                "W1 concurrency {}",
                concurrency.map_or("default".into(), |c| c.to_string())
            ),
        )));
        phases.push(stop.busy_ms);
    }
    ep.set_latency(None);
    let (c1, cd) = (phases[0], phases[1]);
    let lat = if injected {
        format!("{} ms latency", W1_LATENCY.as_millis())
    } else {
        "no added latency (remote endpoint)".to_owned()
    };
    push_row(
        rows,
        format!("W1 20 × 1 MiB, {lat}: upload phase, concurrency 1"),
        secs(c1),
        "",
        None,
    );
    push_row(
        rows,
        format!("W1 20 × 1 MiB, {lat}: upload phase, default concurrency ({DEFAULT_CONCURRENCY})"),
        secs(cd),
        "≤ 0.25 s",
        Some(cd <= 250),
    );
    let ratio = c1 as f64 / cd.max(1) as f64;
    let waves = W1_FILES.div_ceil(DEFAULT_CONCURRENCY);
    sanity.push(format!(
        "note W1: {W1_FILES} files through {DEFAULT_CONCURRENCY} upload slots take {waves} latency round trips against {W1_FILES} at concurrency 1, so the ratio is at most ~{}× even with zero per-file cost",
        W1_FILES / waves
    ));
    push_row(
        rows,
        "W1 ratio concurrency 1 / default",
        format!("{ratio:.1}×"),
        "≥ 10×",
        Some(ratio >= 10.0),
    );
}

// ---------------------------------------------------------------------------------------------
// W2: many small files, daemon vs bare PUT loop
// ---------------------------------------------------------------------------------------------

fn w2(rt: &tokio::runtime::Runtime, ep: &Endpoint, rows: &mut Vec<Row>, sanity: &mut Vec<String>) {
    // The bare loop gets a runtime of its own, like the daemon has a process of its own, so it
    // does not share worker threads with the in-process server.
    let bare_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .expect("bare-loop runtime");
    let size = 4 * KIB;
    let mut bare = Vec::new();
    let mut daemon_rates = Vec::new();
    // CPU spent: by this process during the bare loop (client + server), by the daemon
    // (user, system), by this process during the daemon run (the server alone).
    let (mut bare_cpu, mut daemon_cpu, mut server_cpu) = (Vec::new(), Vec::new(), Vec::new());
    // The tool users compare with, on the same files and endpoint, when it is installed.
    let rclone = which("rclone");
    let mut rclone_rates = Vec::new();
    // The daemon's whole `once` run, start to exit (settle window, probe and all), to set
    // beside rclone's whole run.
    let mut daemon_whole = Vec::new();
    for round in 0..W2_ROUNDS {
        // Bare PUT loop.
        let prefix = format!("{}w2-bare-{round}/", ep.run_prefix);
        let client = ep.client();
        let cpu0 = self_cpu_ms();
        let elapsed = bare_rt.block_on(bare_put_loop(
            client,
            ep.bucket.clone(),
            prefix.clone(),
            W2_FILES,
            DEFAULT_CONCURRENCY,
            size as usize,
        ));
        bare_cpu.push(self_cpu_ms() - cpu0);
        let listed = rt.block_on(ep.list(&prefix));
        assert_eq!(
            listed.len(),
            W2_FILES,
            "bare PUT loop: expected {W2_FILES} objects under {prefix}"
        );
        bare.push(W2_FILES as f64 / elapsed.as_secs_f64());
        eprintln!(
            "[bench] W2 round {round}: bare loop {elapsed:.2?}, bench process CPU {:.0} ms",
            bare_cpu[round]
        );

        // The daemon.
        let work = Work::new("w2");
        let prefix = format!("{}w2-daemon-{round}/", ep.run_prefix);
        let mut files = Vec::with_capacity(W2_FILES);
        for i in 0..W2_FILES {
            let name = format!("f{i:04}.bin");
            write_random(
                &work.inbox.join(&name),
                size,
                0x2_0000 + (round * W2_FILES + i) as u64,
            );
            files.push((name, size));
        }
        work.write_config(
            ep,
            &prefix,
            &Opts {
                concurrency: None,
                settle: "50ms",
                window: Some("50ms"),
            },
        );
        let cpu0 = self_cpu_ms();
        let started = Instant::now();
        let daemon = Daemon::spawn(ep, &work, "once", &format!("W2 round {round}"));
        let exit = daemon.wait(Duration::from_secs(180));
        daemon_whole.push(W2_FILES as f64 / started.elapsed().as_secs_f64());
        server_cpu.push(self_cpu_ms() - cpu0);
        daemon_cpu.push(exit.cpu_ms);
        daemon.expect_success(&exit);
        let stop = daemon.stopped();
        daemon.expect_uploaded(&stop, W2_FILES);
        if stop.busy_ms == 0 {
            daemon.fail("busy_ms is 0 for 2000 files");
        }
        daemon_rates.push(W2_FILES as f64 * 1000.0 / stop.busy_ms as f64);
        sanity.push(rt.block_on(check_outcome(
            ep,
            &work,
            &prefix,
            &files,
            &format!("W2 round {round}"),
        )));
        eprintln!(
            "[bench] W2 round {round}: bare {:.0} files/s, daemon {:.0} files/s",
            bare[round], daemon_rates[round]
        );

        // rclone copy of the same 2 000 files (now in done/) to a fresh prefix.
        if let Some(rclone) = &rclone {
            let prefix = format!("{}w2-rclone-{round}/", ep.run_prefix);
            let elapsed = rclone_copy(rclone, ep, &work.done, &prefix);
            let listed = rt.block_on(ep.list(&prefix));
            assert_eq!(
                listed.len(),
                W2_FILES,
                "rclone: expected {W2_FILES} objects under {prefix}"
            );
            rclone_rates.push(W2_FILES as f64 / elapsed.as_secs_f64());
            eprintln!(
                "[bench] W2 round {round}: rclone copy --transfers {DEFAULT_CONCURRENCY} {:.0} files/s",
                rclone_rates[round]
            );
        }
    }
    let per_file = |ms: f64| ms * 1000.0 / W2_FILES as f64;
    let du: Vec<f64> = daemon_cpu.iter().map(|c| c.0).collect();
    let ds: Vec<f64> = daemon_cpu.iter().map(|c| c.1).collect();
    sanity.push(format!(
        "note W2 CPU per file (medians): daemon {:.0} µs user + {:.0} µs sys; in-process server during the daemon run {:.0} µs; bench process during the bare loop (client + server) {:.0} µs",
        per_file(median(&du)),
        per_file(median(&ds)),
        per_file(median(&server_cpu)),
        per_file(median(&bare_cpu)),
    ));
    let per_round: Vec<String> = bare
        .iter()
        .zip(&daemon_rates)
        .map(|(b, d)| format!("{:.0}", d / b * 100.0))
        .collect();
    let (mb, md) = (median(&bare), median(&daemon_rates));
    let pct = md / mb * 100.0;
    push_row(
        rows,
        format!(
            "W2 2 000 × 4 KiB: bare PUT loop (same requests as the daemon, bodies from memory), {DEFAULT_CONCURRENCY} in flight (median of {W2_ROUNDS})"
        ),
        format!("{mb:.0} files/s"),
        "",
        None,
    );
    push_row(
        rows,
        format!("W2 2 000 × 4 KiB: daemon, default concurrency (median of {W2_ROUNDS})"),
        format!("{md:.0} files/s"),
        "",
        None,
    );
    if rclone_rates.is_empty() {
        push_row(
            rows,
            "W2 rclone copy of the same files",
            "not run: rclone is not installed (Debian: apt-get install rclone)",
            "",
            None,
        );
    } else {
        let mr = median(&rclone_rates);
        let mw = median(&daemon_whole);
        push_row(
            rows,
            format!(
                "W2 2 000 × 4 KiB: daemon `once`, whole run from start to exit (median of {W2_ROUNDS})"
            ),
            format!("{mw:.0} files/s"),
            "",
            None,
        );
        push_row(
            rows,
            format!(
                "W2 2 000 × 4 KiB: rclone copy --transfers {DEFAULT_CONCURRENCY} of the same files (median of {W2_ROUNDS}; whole run, listing included)"
            ),
            format!("{mr:.0} files/s"),
            "",
            None,
        );
        push_row(
            rows,
            "W2 daemon / rclone copy (whole runs)",
            format!("{:.0} %", mw / mr * 100.0),
            "≥ 100 %",
            Some(mw >= mr),
        );
    }
    push_row(
        rows,
        "W2 daemon / bare PUT loop",
        format!("{pct:.0} % (rounds: {} %)", per_round.join(", ")),
        "≥ 95 %",
        Some(pct >= 95.0),
    );
}

async fn bare_put_loop(
    client: Client,
    bucket: String,
    prefix: String,
    n: usize,
    concurrency: usize,
    size: usize,
) -> Duration {
    let mut body = vec![0u8; size];
    XorShift::new(0xba5e).fill(&mut body);
    // The same request the daemon sends for a small file: the body from memory with its
    // precomputed SHA-256 checksum, the sha256 metadata, and create-only. What the daemon
    // adds on top (finding, settling, hashing, ledger, moving) is what W2 measures.
    let digest = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&body)
    };
    let checksum = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(digest)
    };
    let meta = hex::encode(digest);
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for i in 0..n {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let (client, bucket, body) = (client.clone(), bucket.clone(), body.clone());
        let (checksum, meta) = (checksum.clone(), meta.clone());
        let key = format!("{prefix}f{i:04}.bin");
        tasks.spawn(async move {
            let res = client
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .body(ByteStream::from(body))
                .content_length(size as i64)
                .checksum_sha256(checksum)
                .metadata("sha256", meta)
                .if_none_match("*")
                .send()
                .await;
            drop(permit);
            res.map_err(|e| {
                format!(
                    "bare PUT {key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })
        });
    }
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res.expect("bare PUT task") {
            panic!("{e}");
        }
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// W3: one 1 GiB file
// ---------------------------------------------------------------------------------------------

fn w3(rt: &tokio::runtime::Runtime, ep: &Endpoint, rows: &mut Vec<Row>, sanity: &mut Vec<String>) {
    let work = Work::new("w3");
    let prefix = format!("{}w3/", ep.run_prefix);
    let name = "disk.img";
    let t = Instant::now();
    write_random(&work.inbox.join(name), GIB, 0x3333);
    eprintln!("[bench] W3 wrote 1 GiB in {:.1?}", t.elapsed());
    work.write_config(
        ep,
        &prefix,
        &Opts {
            concurrency: None,
            settle: "50ms",
            window: Some("50ms"),
        },
    );
    let daemon = Daemon::spawn(ep, &work, "once", "W3");
    let exit = daemon.wait(Duration::from_secs(300));
    daemon.expect_success(&exit);
    let stop = daemon.stopped();
    daemon.expect_uploaded(&stop, 1);
    let key = format!("{prefix}{name}");
    let done = work.done.join(name);

    // Correctness: the object is exactly 1 GiB, and sampled ranges match the file byte for byte.
    let (ranges, ok) = rt.block_on(async {
        let client = ep.client();
        let head = client
            .head_object()
            .bucket(&ep.bucket)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("HEAD {key}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
            });
        assert_eq!(
            head.content_length(),
            Some(GIB as i64),
            "W3: object {key} has the wrong size"
        );
        let file = fs::File::open(&done).unwrap_or_else(|e| panic!("open {}: {e}", done.display()));
        let mut rng = XorShift::new(seed_from_time());
        let len = 256 * KIB;
        let mut offsets = vec![0, 16 * MIB - len / 2, GIB - len];
        for _ in 0..3 {
            offsets.push(rng.next() % (GIB - len));
        }
        for &off in &offsets {
            let out = client
                .get_object()
                .bucket(&ep.bucket)
                .key(&key)
                .range(format!("bytes={off}-{}", off + len - 1))
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "GET {key} range at {off}: {}",
                        aws_sdk_s3::error::DisplayErrorContext(e)
                    )
                });
            let got = out.body.collect().await.expect("read range").into_bytes();
            let mut want = vec![0u8; len as usize];
            file.read_exact_at(&mut want, off).expect("read done file");
            assert!(
                got.as_ref() == want.as_slice(),
                "W3: object {key} differs from the file in range {off}+{len}"
            );
        }
        (offsets.len(), true)
    });
    sanity.push(format!(
        "sanity W3: inbox empty: {}, done/{name} present: {}, object size = 1 GiB (HEAD): yes, {ranges} ranges of 256 KiB identical (GET Range): {}",
        yes(count_files(&work.inbox) == 0),
        yes(done.is_file()),
        yes(ok)
    ));

    let mbps = GIB as f64 / 1e6 / (stop.busy_ms.max(1) as f64 / 1000.0);
    let rss_mib = exit.maxrss_kib as f64 / 1024.0;
    push_row(
        rows,
        format!(
            "W3 1 GiB file: throughput (upload phase {})",
            secs(stop.busy_ms)
        ),
        format!("{mbps:.0} MB/s"),
        "≥ 100 MB/s",
        Some(mbps >= 100.0),
    );
    push_row(
        rows,
        "W3 1 GiB file: daemon peak RSS",
        format!("{rss_mib:.1} MiB"),
        "≤ 64 MiB",
        Some(rss_mib <= 64.0),
    );
}

// ---------------------------------------------------------------------------------------------
// W4: drop-to-object latency in a running daemon
// ---------------------------------------------------------------------------------------------

fn w4(rt: &tokio::runtime::Runtime, ep: &Endpoint, rows: &mut Vec<Row>, sanity: &mut Vec<String>) {
    // Renamed into the inbox (the end of an atomic save): on a local disk the rename-in fast
    // path sends each file after a second look, without waiting for the settle window; the
    // target is the settle window's: at most 200 ms beyond it.
    let settle = format!("{}ms", W4_SETTLE.as_millis());
    let latencies = w4_run(rt, ep, sanity, "w4", &settle, W4Writer::RenameIn);
    let mut sorted: Vec<f64> = latencies.iter().map(|l| l.as_secs_f64() * 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&sorted, 0.50), percentile(&sorted, 0.99));
    eprintln!(
        "[bench] W4 drop → object (ms): min {:.1}, max {:.1}",
        sorted[0],
        sorted[sorted.len() - 1]
    );
    let limit = W4_SETTLE.as_secs_f64() * 1000.0 + 200.0; // settle + 200 ms
    push_row(
        rows,
        format!(
            "W4 40 × 64 KiB renamed into the inbox {} ms apart, `inboxd run` (settle = {settle}): drop → object, p50",
            W4_GAP.as_millis()
        ),
        format!("{p50:.0} ms"),
        "",
        None,
    );
    push_row(
        rows,
        "W4 drop → object, p99 (nearest rank of 40 = max)",
        format!("{p99:.0} ms"),
        "≤ settle + 200 ms",
        Some(p99 <= limit),
    );
}

/// W4c: the close-write fast path. Each PDF is created in the inbox, written and closed, with
/// the default settle: the latency counts from the create to the complete object.
fn w4c(rt: &tokio::runtime::Runtime, ep: &Endpoint, rows: &mut Vec<Row>, sanity: &mut Vec<String>) {
    let latencies = w4_run(rt, ep, sanity, "w4c", W4C_SETTLE, W4Writer::CloseInInbox);
    let mut sorted: Vec<f64> = latencies.iter().map(|l| l.as_secs_f64() * 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&sorted, 0.50), percentile(&sorted, 0.99));
    eprintln!(
        "[bench] W4c drop → object (ms): min {:.1}, max {:.1}",
        sorted[0],
        sorted[sorted.len() - 1]
    );
    push_row(
        rows,
        format!(
            "W4c 40 PDFs of ~64 KiB created, written and closed in the inbox {} ms apart (settle = {W4C_SETTLE}, the default): drop → object, p50",
            W4_GAP.as_millis()
        ),
        format!("{p50:.0} ms"),
        "",
        None,
    );
    push_row(
        rows,
        "W4c drop → object, p99 (nearest rank of 40 = max)",
        format!("{p99:.0} ms"),
        "≤ 100 ms",
        Some(p99 <= 100.0),
    );
}

/// How W4's writer puts each file into the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum W4Writer {
    /// Written beside the inbox and renamed in: it appears complete at once, but no writer
    /// closes it in the inbox, so the settle window decides.
    RenameIn,
    /// Created in the inbox, written and closed, as a scanner or a copy does: a PDF, whose
    /// format says when it is whole, so the close-write fast path takes it.
    CloseInInbox,
}

/// A PDF (made by pdf-writer) of about `payload` bytes: one page and a stream of noise.
fn w4_pdf(seed: u64, payload: usize) -> Vec<u8> {
    use pdf_writer::{Pdf, Rect, Ref};
    let mut pdf = Pdf::new();
    let (catalog, tree, page, data) = (Ref::new(1), Ref::new(2), Ref::new(3), Ref::new(4));
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids([page]).count(1);
    pdf.page(page)
        .parent(tree)
        .media_box(Rect::new(0.0, 0.0, 595.0, 842.0));
    let mut noise = vec![0u8; payload];
    XorShift::new(seed).fill(&mut noise);
    pdf.stream(data, &noise);
    pdf.finish()
}

/// Drops `W4_FILES` files `W4_GAP` apart into a running daemon and returns each one's time
/// from the drop to its complete object.
fn w4_run(
    rt: &tokio::runtime::Runtime,
    ep: &Endpoint,
    sanity: &mut Vec<String>,
    name: &str,
    settle: &str,
    writer: W4Writer,
) -> Vec<Duration> {
    let label = name.to_uppercase();
    let work = Work::new(name);
    let prefix = format!("{}{name}/", ep.run_prefix);
    work.write_config(
        ep,
        &prefix,
        &Opts {
            concurrency: None,
            settle,
            window: None,
        },
    );
    let daemon = Daemon::spawn(ep, &work, "run", &label);
    daemon.wait_for_message("inboxd started", Duration::from_secs(30));

    let size = 64 * KIB;
    let bodies: Vec<Vec<u8>> = (0..W4_FILES)
        .map(|i| match writer {
            W4Writer::RenameIn => {
                let mut buf = vec![0u8; size as usize];
                XorShift::new(0x4_0000 + i as u64).fill(&mut buf);
                buf
            }
            W4Writer::CloseInInbox => w4_pdf(0x4_1000 + i as u64, size as usize),
        })
        .collect();
    let ext = match writer {
        W4Writer::RenameIn => "bin",
        W4Writer::CloseInInbox => "pdf",
    };
    let files: Vec<(String, u64)> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("drop-{i:02}.{ext}"), b.len() as u64))
        .collect();
    let latencies = rt.block_on(async {
        let mut lat: Vec<Option<Duration>> = vec![None; W4_FILES];
        let mut pending: Vec<(usize, Instant)> = Vec::new();
        let start = Instant::now();
        let mut next = 0;
        loop {
            if next < W4_FILES && start.elapsed() >= W4_GAP * next as u32 {
                let (name, _) = &files[next];
                let dropped = Instant::now();
                match writer {
                    W4Writer::RenameIn => {
                        let staged = work.staging.join(name);
                        fs::write(&staged, &bodies[next]).expect("write staged file");
                        fs::rename(&staged, work.inbox.join(name)).expect("rename into the inbox");
                    }
                    // Create, write, close (fs::write): one IN_CLOSE_WRITE.
                    W4Writer::CloseInInbox => {
                        fs::write(work.inbox.join(name), &bodies[next]).expect("write in the inbox")
                    }
                }
                pending.push((next, dropped));
                next += 1;
            }
            let checks = pending.iter().map(|(i, _)| {
                let (key, size) = (format!("{prefix}{}", files[*i].0), files[*i].1);
                async move { ep.object_complete(&key, size).await }
            });
            let present = futures::future::join_all(checks).await;
            let now = Instant::now();
            let mut still = Vec::new();
            for ((i, dropped), here) in pending.drain(..).zip(present) {
                if here {
                    lat[i] = Some(now - dropped);
                } else if now - dropped > Duration::from_secs(20) {
                    daemon.fail(&format!(
                        "{label}: {} not in the bucket 20 s after the drop",
                        files[i].0
                    ));
                } else {
                    still.push((i, dropped));
                }
            }
            pending = still;
            if next == W4_FILES && pending.is_empty() {
                break;
            }
            if let Some(status) = daemon.try_wait() {
                daemon.fail(&format!(
                    "{label}: the daemon exited early ({})",
                    status.describe()
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lat.into_iter()
            .map(|l| l.expect("every latency measured"))
            .collect::<Vec<_>>()
    });

    // SAFETY: plain syscall on the pid of our own child, which has not been reaped yet.
    let rc = unsafe { libc::kill(daemon.pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM): {}", std::io::Error::last_os_error());
    let exit = daemon.wait(Duration::from_secs(40));
    daemon.expect_success(&exit);
    let stop = daemon.stopped();
    daemon.expect_uploaded(&stop, W4_FILES);
    sanity.push(rt.block_on(check_outcome(ep, &work, &prefix, &files, &label)));
    sanity.push(format!(
        "sanity {label}: SIGTERM → daemon exited with {}",
        exit.describe()
    ));
    latencies
}

// ---------------------------------------------------------------------------------------------
// Outcome checks
// ---------------------------------------------------------------------------------------------

/// All files moved to done/ with their size, the inbox and failed/ empty, and the bucket
/// holding exactly these keys under `prefix` with these sizes. Returns the sanity line.
async fn check_outcome(
    ep: &Endpoint,
    work: &Work,
    prefix: &str,
    files: &[(String, u64)],
    label: &str,
) -> String {
    let in_inbox = count_files(&work.inbox);
    let in_failed = count_files(&work.failed);
    let in_done = files
        .iter()
        .filter(|(name, size)| {
            fs::metadata(work.done.join(name)).is_ok_and(|m| m.is_file() && m.len() == *size)
        })
        .count();
    let listed = ep.list(prefix).await;
    let in_bucket = files
        .iter()
        .filter(|(name, size)| listed.get(&format!("{prefix}{name}")) == Some(&(*size as i64)))
        .count();
    let ok = in_inbox == 0 && in_failed == 0 && in_done == files.len() && in_bucket == files.len();
    let line = format!(
        "sanity {label}: {in_done}/{n} in done/, {in_inbox} left in inbox, {in_failed} in failed/, {in_bucket}/{n} in the bucket under {prefix} with the right size ({extra} other keys) → {verdict}",
        n = files.len(),
        extra = listed.len() - in_bucket,
        verdict = if ok { "ok" } else { "MISMATCH" },
    );
    assert!(ok, "{line}");
    line
}

fn count_files(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

// ---------------------------------------------------------------------------------------------
// The endpoint
// ---------------------------------------------------------------------------------------------

enum Kind {
    Local(Box<Local>),
    Remote,
}

struct Local {
    server: s3::TestS3,
    /// The s3s-fs root (removed after the server has stopped: fields drop in order).
    root: tempfile::TempDir,
    on_tmpfs: bool,
}

struct Endpoint {
    kind: Kind,
    url: String,
    bucket: String,
    region: String,
    access_key: String,
    secret_key: String,
    session_token: Option<String>,
    /// Prepended to every key of this run (fresh per run on a remote endpoint).
    run_prefix: String,
}

impl Endpoint {
    async fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("BENCH_S3_ENDPOINT"), var("BENCH_S3_BUCKET")) {
            (Some(url), Some(bucket)) => {
                let need = |name: &str| {
                    var(name).unwrap_or_else(|| {
                        panic!("BENCH_S3_ENDPOINT is set: {name} must be set too")
                    })
                };
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                Self {
                    kind: Kind::Remote,
                    url,
                    bucket,
                    region: var("BENCH_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
                    access_key: need("AWS_ACCESS_KEY_ID"),
                    secret_key: need("AWS_SECRET_ACCESS_KEY"),
                    session_token: var("AWS_SESSION_TOKEN"),
                    run_prefix: format!("inboxd-bench-{secs}/"),
                }
            }
            (Some(_), None) | (None, Some(_)) => {
                panic!("set both BENCH_S3_ENDPOINT and BENCH_S3_BUCKET, or neither")
            }
            (None, None) => {
                // s3s-fs creates and renames two files per object in one directory; on a disk
                // file system that costs more CPU than the daemon itself does per small file
                // (ext4 inode allocation skipping recently deleted inodes, the directory lock),
                // and it lands on the same disk as the inbox. A RAM-backed root keeps the
                // server's own storage out of the measurement.
                let shm = Path::new("/dev/shm");
                let on_tmpfs = available_bytes(shm).is_some_and(|b| b >= 4 * GIB);
                let parent = if on_tmpfs {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                };
                let root = tempfile::Builder::new()
                    .prefix("inboxd-bench-s3-")
                    .disable_cleanup(keep_workspaces())
                    .tempdir_in(&parent)
                    .expect("create the S3 root");
                let server = s3::TestS3::start_at(root.path(), &[LOCAL_BUCKET])
                    .await
                    .expect("start the in-process S3 server");
                Self {
                    url: server.endpoint().to_owned(),
                    kind: Kind::Local(Box::new(Local {
                        server,
                        root,
                        on_tmpfs,
                    })),
                    bucket: LOCAL_BUCKET.into(),
                    region: s3::REGION.into(),
                    access_key: s3::ACCESS_KEY.into(),
                    secret_key: s3::SECRET_KEY.into(),
                    session_token: None,
                    run_prefix: String::new(),
                }
            }
        }
    }

    fn describe(&self) -> String {
        match &self.kind {
            Kind::Local(l) => format!(
                "in-process s3s-fs 0.14.1 at {}, root {} ({}; W1: latency injected on every write request)",
                self.url,
                l.root.path().display(),
                if l.on_tmpfs { "tmpfs" } else { "disk" },
            ),
            Kind::Remote => format!(
                "remote {} bucket {} (BENCH_S3_ENDPOINT; no latency injection possible, W1 runs without added latency)",
                self.url, self.bucket
            ),
        }
    }

    fn client(&self) -> Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.url)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                self.session_token.clone(),
                None,
                "bench",
            ))
            .build();
        Client::from_conf(conf)
    }

    /// Adds (or with `None` removes) a delay on every upload request. False on a remote
    /// endpoint, where nothing can be injected.
    fn set_latency(&self, latency: Option<Duration>) -> bool {
        let Kind::Local(local) = &self.kind else {
            return false;
        };
        let server = &local.server;
        server.plan.clear();
        if let Some(d) = latency {
            for op in [
                s3::Op::PutObject,
                s3::Op::UploadPart,
                s3::Op::CreateMultipartUpload,
                s3::Op::CompleteMultipartUpload,
            ] {
                server.push(op, s3::Fault::delay(d).always());
            }
        }
        true
    }

    /// The whole object is in the bucket. In-process: the file in the s3s-fs root (objects
    /// are renamed into place, so a full-size file is the complete object); remote: HEAD.
    async fn object_complete(&self, key: &str, size: u64) -> bool {
        match &self.kind {
            Kind::Local(l) => fs::metadata(l.server.bucket_dir(&self.bucket).join(key))
                .is_ok_and(|m| m.is_file() && m.len() == size),
            Kind::Remote => self
                .client()
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .is_ok_and(|h| h.content_length() == Some(size as i64)),
        }
    }

    /// Key → size of every object under `prefix`, through ListObjectsV2.
    async fn list(&self, prefix: &str) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        let mut pages = self
            .client()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| {
                panic!(
                    "ListObjectsV2 {}/{prefix}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.insert(k.to_owned(), o.size().unwrap_or(-1));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// A workspace and the daemon process
// ---------------------------------------------------------------------------------------------

struct Work {
    dir: tempfile::TempDir,
    inbox: PathBuf,
    done: PathBuf,
    failed: PathBuf,
    /// Outside the inbox, same file system: files are written here, then renamed in.
    staging: PathBuf,
}

struct Opts<'a> {
    concurrency: Option<usize>,
    settle: &'a str,
    window: Option<&'a str>,
}

impl Work {
    fn new(name: &str) -> Self {
        let keep = keep_workspaces();
        let dir = tempfile::Builder::new()
            .prefix(&format!("inboxd-bench-{name}-"))
            .disable_cleanup(keep)
            .tempdir()
            .expect("create workspace tempdir");
        if keep {
            eprintln!("[bench] {name}: workspace kept at {}", dir.path().display());
        }
        let p = dir.path().to_path_buf();
        for d in ["inbox", "staging"] {
            fs::create_dir_all(p.join(d)).expect("create workspace dir");
        }
        Self {
            inbox: p.join("inbox"),
            done: p.join("done"),
            failed: p.join("failed"),
            staging: p.join("staging"),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self, ep: &Endpoint, prefix: &str, o: &Opts) {
        let mut toml = format!(
            "state_dir = {state}\n\n[s3]\nendpoint = {url}\nregion = {region}\nforce_path_style = true\n\n",
            state = q(&self.path("state")),
            url = qs(&ep.url),
            region = qs(&ep.region),
        );
        if let Some(c) = o.concurrency {
            toml += &format!("[upload]\nconcurrency = {c}\n\n");
        }
        if let Some(w) = o.window {
            toml += &format!("[batch]\nwindow = {}\n\n", qs(w));
        }
        toml += "[log]\nformat = \"json\"\nlevel = \"info\"\n\n";
        toml += &format!(
            "[[inbox]]\nname = \"bench\"\npath = {}\ndone_dir = {}\nfailed_dir = {}\nbucket = {}\nprefix = {}\nsettle = {}\n",
            q(&self.inbox),
            q(&self.done),
            q(&self.failed),
            qs(&ep.bucket),
            qs(prefix),
            qs(o.settle),
        );
        fs::write(self.path("inboxd.toml"), toml).expect("write config");
    }
}

fn keep_workspaces() -> bool {
    std::env::var_os("BENCH_KEEP").is_some_and(|v| !v.is_empty())
}

/// Free space for an unprivileged user on the file system of `path`.
fn available_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; zeroed is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid pointer to a local.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// A TOML basic string.
fn qs(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn q(p: &Path) -> String {
    qs(p.to_str().expect("temp paths are UTF-8"))
}

struct Daemon {
    pid: libc::pid_t,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

struct Exit {
    /// Raw wait status.
    status: libc::c_int,
    /// Peak resident set size (KiB on Linux).
    maxrss_kib: i64,
    /// CPU time of the daemon, user and system, in ms.
    cpu_ms: (f64, f64),
}

impl Exit {
    fn code(&self) -> Option<i32> {
        libc::WIFEXITED(self.status).then(|| libc::WEXITSTATUS(self.status))
    }

    fn describe(&self) -> String {
        match self.code() {
            Some(c) => format!("exit code {c}"),
            None if libc::WIFSIGNALED(self.status) => {
                format!("killed by signal {}", libc::WTERMSIG(self.status))
            }
            None => format!("wait status {:#x}", self.status),
        }
    }
}

/// The daemon's final log line.
struct Stopped {
    busy_ms: u64,
    uploaded: u64,
    failed: u64,
    left: u64,
}

impl Daemon {
    fn spawn(ep: &Endpoint, work: &Work, subcommand: &str, label: &str) -> Self {
        let stdout = work.path("daemon.stdout");
        let stderr = work.path("daemon.stderr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_inboxd"));
        cmd.arg(subcommand)
            .arg("--config")
            .arg(work.path("inboxd.toml"))
            .current_dir(work.dir.path())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("create stdout file"))
            .stderr(fs::File::create(&stderr).expect("create stderr file"));
        // Every INBOXD_* variable would override (or, unknown, break) the generated config.
        let mut remove: Vec<OsString> = std::env::vars_os()
            .map(|(k, _)| k)
            .filter(|k| k.to_string_lossy().starts_with("INBOXD_"))
            .collect();
        // The configured level and endpoint, not whatever the caller's shell has.
        remove.extend(
            [
                "RUST_LOG",
                "AWS_PROFILE",
                "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3",
            ]
            .map(OsString::from),
        );
        if ep.session_token.is_none() {
            remove.push("AWS_SESSION_TOKEN".into());
        }
        for k in remove {
            cmd.env_remove(k);
        }
        cmd.env("AWS_ACCESS_KEY_ID", &ep.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &ep.secret_key)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_PROXY", "127.0.0.1,localhost");
        if let Some(t) = &ep.session_token {
            cmd.env("AWS_SESSION_TOKEN", t);
        }
        // Reaped with wait4 (for ru_maxrss), not Child::wait: only the pid is kept.
        #[allow(clippy::zombie_processes)]
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", env!("CARGO_BIN_EXE_inboxd")));
        Self {
            pid: child.id() as libc::pid_t,
            label: label.to_owned(),
            stdout,
            stderr,
        }
    }

    /// Reaps the daemon if it has exited.
    fn try_wait(&self) -> Option<Exit> {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data; zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: valid pointers to locals; `pid` is our own unreaped child.
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
            if r == self.pid {
                return Some(Exit {
                    status,
                    maxrss_kib: usage.ru_maxrss,
                    cpu_ms: (tv_ms(usage.ru_utime), tv_ms(usage.ru_stime)),
                });
            }
            if r == 0 {
                return None;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                panic!("{}: wait4({}): {err}", self.label, self.pid);
            }
        }
    }

    /// Waits for the daemon to exit; kills it and panics with its log after `timeout`.
    fn wait(&self, timeout: Duration) -> Exit {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_wait() {
                return exit;
            }
            if Instant::now() > deadline {
                self.fail(&format!("did not exit within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills the daemon (if still running) and panics with the tail of its output.
    fn fail(&self, what: &str) -> ! {
        if self.try_wait().is_none() {
            // SAFETY: plain syscalls on our own unreaped child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
        panic!(
            "{}: {what}\n--- daemon stdout (tail) ---\n{}\n--- daemon stderr (tail) ---\n{}",
            self.label,
            tail(&self.stdout, 40),
            tail(&self.stderr, 40)
        );
    }

    fn expect_success(&self, exit: &Exit) {
        if exit.code() != Some(0) {
            self.fail(&format!("daemon ended with {}", exit.describe()));
        }
    }

    fn expect_uploaded(&self, stop: &Stopped, n: usize) {
        if stop.uploaded != n as u64 || stop.failed != 0 || stop.left != 0 {
            self.fail(&format!(
                "expected {n} uploaded, got uploaded={} failed={} left_in_inbox={}",
                stop.uploaded, stop.failed, stop.left
            ));
        }
    }

    fn log_lines(&self) -> Vec<Value> {
        fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    fn wait_for_message(&self, message: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .log_lines()
                .iter()
                .any(|v| field(v, "message").and_then(Value::as_str) == Some(message))
            {
                return;
            }
            if let Some(exit) = self.try_wait() {
                self.fail(&format!(
                    "exited ({}) before logging {message:?}",
                    exit.describe()
                ));
            }
            if Instant::now() > deadline {
                self.fail(&format!("no {message:?} within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stopped(&self) -> Stopped {
        let lines = self.log_lines();
        let Some(v) = lines
            .iter()
            .rev()
            .find(|v| field(v, "message").and_then(Value::as_str) == Some("inboxd stopped"))
        else {
            self.fail("no \"inboxd stopped\" line in the daemon's JSON output");
        };
        let num = |name: &str| {
            field(v, name)
                .and_then(Value::as_u64)
                .unwrap_or_else(|| self.fail(&format!("\"inboxd stopped\" has no numeric {name}")))
        };
        Stopped {
            busy_ms: num("busy_ms"),
            uploaded: num("uploaded"),
            failed: num("failed"),
            left: num("left_in_inbox"),
        }
    }
}

/// A field of a tracing JSON line, flattened or under "fields".
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name)
        .or_else(|| v.get("fields").and_then(|f| f.get(name)))
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("<{}: {e}>", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Data, statistics, formatting
// ---------------------------------------------------------------------------------------------

/// xorshift64: fast, and every 8-byte word differs, so no two MiB blocks are alike.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed: distinct, never zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `size` pseudo-random bytes (1 MiB at a time) and syncs, so that write-back does not
/// compete with the measurement.
fn write_random(path: &Path, size: u64, seed: u64) {
    let mut rng = XorShift::new(seed);
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut buf = vec![0u8; MIB.min(size) as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write test file");
        left -= n as u64;
    }
    if size >= 64 * MIB {
        f.sync_all().expect("sync test file");
    }
}

fn tv_ms(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 * 1000.0 + tv.tv_usec as f64 / 1000.0
}

/// CPU time (user + system, ms) of this process so far: the in-process server and the bare
/// PUT loop.
fn self_cpu_ms() -> f64 {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    tv_ms(usage.ru_utime) + tv_ms(usage.ru_stime)
}

fn seed_from_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(ms: u64) -> String {
    format!("{:.3} s", ms as f64 / 1000.0)
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

fn uname() -> String {
    Command::new("uname")
        .arg("-srm")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "uname unavailable".into(), |s| s.trim().to_owned())
}

/// "YYYY-MM-DD HH:MM UTC" without a date crate (days → civil date, H. Hinnant's algorithm).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The program `name` on PATH, if any.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// `rclone copy dir remote:bucket/prefix --transfers N` against the bench's endpoint, configured
/// through the environment only; returns the wall time of the whole run.
fn rclone_copy(rclone: &Path, ep: &Endpoint, dir: &Path, prefix: &str) -> Duration {
    let mut cmd = Command::new(rclone);
    cmd.arg("copy")
        .arg(dir)
        .arg(format!(
            "bench:{}/{}",
            ep.bucket,
            prefix.trim_end_matches('/')
        ))
        .args([
            "--transfers",
            &DEFAULT_CONCURRENCY.to_string(),
            "--checkers",
            "16",
        ])
        // rclone refuses to start with a CA bundle it cannot use (this machine sets one).
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
        .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
        .env("RCLONE_CONFIG_BENCH_ENDPOINT", &ep.url)
        .env("RCLONE_CONFIG_BENCH_REGION", &ep.region)
        .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", &ep.access_key)
        .env("RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY", &ep.secret_key)
        .env("RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE", "true")
        // ListObjectsV2, as the daemon's own tooling uses (s3s implements only that one).
        .env("RCLONE_CONFIG_BENCH_LIST_VERSION", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(token) = &ep.session_token {
        cmd.env("RCLONE_CONFIG_BENCH_SESSION_TOKEN", token);
    }
    let start = Instant::now();
    let out = cmd.output().expect("run rclone");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "rclone copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}
