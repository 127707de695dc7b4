//! A hung share stalls only its own inbox: while one inbox's file-system calls hang (a debug
//! failpoint makes them wait while a flag file exists, as on a hard-mounted share whose server
//! stopped answering), the other inbox keeps flowing; when the share answers again, the
//! stalled inbox's files go out too, byte for byte, and nothing was lost or moved twice.

mod support;

use std::fs;

use support::s3::TestS3;
use support::{Daemon, Setup, TIMEOUT, assert_object, content, strip_ansi, toml_str, wait_until};

fn lines_with(daemon: &Daemon, needle: &str) -> Vec<String> {
    strip_ansi(&daemon.stdout())
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_inbox_stalls_alone_and_recovers() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(
        &s3,
        Setup::new()
            .inboxes(2)
            .inbox_set("fs_timeout", &toml_str("2s"))
            .inbox_set("watch", &toml_str("events")),
    );
    let hung = daemon.inboxes()[0].clone();
    let fine = daemon.inboxes()[1].clone();
    let flag = daemon.dir().join("share-hangs");
    let stall_env = format!("{}:{}", hung.name, flag.display());
    daemon.start_with_env(&[("INBOXD_STALL_FS", &stall_env)]);

    // Both inboxes work before the share hangs.
    let before = content(1, 30_000);
    hung.drop("before.pdf", &before);
    fine.drop("before.pdf", &before);
    wait_until(TIMEOUT, "before.pdf is in done/ of both inboxes", || {
        hung.is_done("before.pdf") && fine.is_done("before.pdf")
    })
    .await;

    fs::write(&flag, b"").expect("hang the share");
    let stuck: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("stuck {i}.pdf"),
                content(10 + i, 20_000 + i as usize),
            )
        })
        .collect();
    for (rel, bytes) in &stuck {
        hung.drop(rel, bytes);
    }
    wait_until(TIMEOUT, "the hung inbox is reported stalled", || {
        !lines_with(&daemon, "not answering").is_empty()
    })
    .await;
    // The other inbox keeps flowing while the hung one waits, file after file.
    let flowing: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                format!("flowing {i}.pdf"),
                content(20 + i, 15_000 + i as usize),
            )
        })
        .collect();
    for (rel, bytes) in &flowing {
        fine.drop(rel, bytes);
        wait_until(
            TIMEOUT,
            format!("{rel} is in done/ while the other share hangs"),
            || fine.is_done(rel),
        )
        .await;
    }
    for (rel, _) in &stuck {
        assert!(
            !hung.in_done(rel),
            "{rel} reached done/ while its share was hung"
        );
    }
    let stalled = lines_with(&daemon, "not answering");
    assert_eq!(stalled.len(), 1, "one warning per stall: {stalled:#?}");
    assert!(
        stalled[0].contains(&hung.name) && stalled[0].contains("WARN"),
        "{}",
        stalled[0]
    );

    // The share answers again: the stalled inbox's files go out.
    fs::remove_file(&flag).expect("lift the hang");
    wait_until(TIMEOUT, "every stuck file is in done/", || {
        stuck.iter().all(|(rel, _)| hung.is_done(rel))
    })
    .await;
    let recovered = lines_with(&daemon, "answers again");
    assert_eq!(recovered.len(), 1, "{recovered:#?}");
    assert!(recovered[0].contains(&hung.name), "{}", recovered[0]);
    assert!(daemon.is_running(), "inboxd exited");
    daemon.stop().await;

    for (rel, bytes) in &stuck {
        hung.assert_done(rel, bytes);
        assert_object(&s3, &hung.key(rel), bytes).await;
    }
    for (rel, bytes) in &flowing {
        fine.assert_done(rel, bytes);
        assert_object(&s3, &fine.key(rel), bytes).await;
    }
    hung.assert_empty();
    fine.assert_empty();
    hung.assert_no_failures();
    fine.assert_no_failures();
}
