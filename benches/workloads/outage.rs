//! W5: an outage with files waiting. `inboxd run` has uploaded one file (so it holds pooled
//! connections), then the in-process server goes down (connections refused) or hangs
//! (connections accepted, nothing answered), W5_FILES files are dropped, and after the outage
//! the server comes back (a restart: the hung server's connections are closed). Measured: from
//! the server's return until the inbox is drained (every file moved to done/), and the WARN
//! and ERROR lines the daemon wrote over the whole run.

use super::*;

const W5_FILES: usize = 64;
const W5_SIZE: u64 = 64 * KIB;
/// Outages as in the field test that found the problem (issue 8).
const REFUSED: Duration = Duration::from_secs(70);
const HUNG: Duration = Duration::from_secs(45);
/// Goals: the files out within 15 s of the return; few lines however many files wait.
const DRAIN_GOAL: Duration = Duration::from_secs(15);
const LINES_GOAL: usize = 40;

pub(super) fn w5(
    rt: &tokio::runtime::Runtime,
    ep: &Endpoint,
    rows: &mut Vec<Row>,
    sanity: &mut Vec<String>,
) {
    let Kind::Local(local) = &ep.kind else {
        push_row(
            rows,
            "W5 outage (needs the in-process server, to stop and restart it)",
            "not run on a remote endpoint",
            "",
            None,
        );
        return;
    };
    let server = &local.server;
    for (label, outage, hang) in [("refused", REFUSED, false), ("hung", HUNG, true)] {
        let work = Work::new("w5");
        let prefix = format!("{}w5-{label}/", ep.run_prefix);
        work.write_config(
            ep,
            &prefix,
            &Opts {
                concurrency: None,
                settle: "500ms",
                window: None,
            },
        );
        let daemon = Daemon::spawn(ep, &work, "run", &format!("W5 {label}"));
        daemon.wait_for_message("inboxd started", Duration::from_secs(30));
        let warm = ("warm.bin".to_owned(), W5_SIZE);
        drop_file(&work, &warm.0, 0x5_0000);
        wait_for_objects(rt, ep, &daemon, &prefix, std::slice::from_ref(&warm));
        while count_files(&work.inbox) > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }

        if hang {
            server.hang();
        } else {
            server.go_down();
        }
        let down = Instant::now();
        let mut files: Vec<(String, u64)> = (0..W5_FILES)
            .map(|i| (format!("wait-{i:02}.bin"), W5_SIZE))
            .collect();
        for (i, (name, _)) in files.iter().enumerate() {
            drop_file(&work, name, 0x5_0001 + i as u64);
        }
        std::thread::sleep(outage.saturating_sub(down.elapsed()));
        if count_files(&work.inbox) != W5_FILES {
            daemon.fail(&format!(
                "W5 {label}: files left the inbox during the outage"
            ));
        }
        server.come_back();
        let back = Instant::now();
        while count_files(&work.inbox) > 0 {
            if back.elapsed() > Duration::from_secs(120) {
                daemon.fail(&format!(
                    "W5 {label}: inbox not drained 120 s after the return"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let drained = back.elapsed();

        // SAFETY: plain syscall on the pid of our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(daemon.pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM): {}", std::io::Error::last_os_error());
        let exit = daemon.wait(Duration::from_secs(40));
        daemon.expect_success(&exit);
        let stop = daemon.stopped();
        files.push(warm);
        daemon.expect_uploaded(&stop, files.len());
        sanity.push(rt.block_on(check_outcome(
            ep,
            &work,
            &prefix,
            &files,
            &format!("W5 {label}"),
        )));
        let alarms: Vec<String> = daemon
            .log_lines()
            .iter()
            .filter(|v| {
                matches!(
                    v.get("level").and_then(Value::as_str),
                    Some("WARN" | "ERROR")
                )
            })
            .map(|v| {
                field(v, "message")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect();
        eprintln!("[bench] W5 {label}: WARN/ERROR messages: {alarms:?}");
        let what = format!(
            "W5 {W5_FILES} × 64 KiB waiting through a {} s {label} outage",
            outage.as_secs()
        );
        push_row(
            rows,
            format!("{what}: server back → inbox drained"),
            format!("{:.1} s", drained.as_secs_f64()),
            "≤ 15 s",
            Some(drained <= DRAIN_GOAL),
        );
        push_row(
            rows,
            format!("{what}: WARN/ERROR lines of the daemon"),
            alarms.len().to_string(),
            "≤ 40",
            Some(alarms.len() <= LINES_GOAL),
        );
    }
}

/// Written outside the inbox and renamed in: the file appears complete, at once.
fn drop_file(work: &Work, name: &str, seed: u64) {
    let staged = work.staging.join(name);
    write_random(&staged, W5_SIZE, seed);
    fs::rename(&staged, work.inbox.join(name)).expect("rename into the inbox");
}

fn wait_for_objects(
    rt: &tokio::runtime::Runtime,
    ep: &Endpoint,
    daemon: &Daemon,
    prefix: &str,
    files: &[(String, u64)],
) {
    let start = Instant::now();
    loop {
        let all = rt.block_on(async {
            for (name, size) in files {
                if !ep.object_complete(&format!("{prefix}{name}"), *size).await {
                    return false;
                }
            }
            true
        });
        if all {
            return;
        }
        if start.elapsed() > Duration::from_secs(30) {
            daemon.fail("W5: the warm-up file did not reach the bucket within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
