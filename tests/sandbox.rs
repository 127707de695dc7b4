//! Where inboxd runs for real: systemd's sandbox (bind mounts make renames cross mounts) and
//! shares that are not mounted yet.

mod support;

use std::path::Path;
use std::process::Stdio;

use support::s3::TestS3;
use support::{CliOutput, Daemon, Setup, TIMEOUT, assert_object, content, wait_until};

// ---------------------------------------------------------------------------------------------
// The systemd sandbox: one bind mount per ReadWritePaths= entry
// ---------------------------------------------------------------------------------------------

/// Runs `inboxd ARGS` (with the daemon's hermetic environment) in a mount namespace of its
/// own in which each of `binds` is bind-mounted onto itself, exactly what systemd does for
/// every `ReadWritePaths=` entry. `None` (after printing why) when this machine cannot:
/// that needs root and a working `unshare --mount`.
async fn in_sandbox(daemon: &Daemon, binds: &[&Path], args: &[&str]) -> Option<CliOutput> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: bind mounts need root; the sandbox case is not tested here");
        return None;
    }
    let probe = std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        println!("SKIP: `unshare --mount` does not work here; the sandbox case is not tested");
        return None;
    }
    // unshare makes the new namespace's mounts private: nothing leaks to the host.
    let script = r#"for d in "$@"; do [ "$d" = -- ] && break; mount --bind "$d" "$d" || exit 97; done
while [ "$1" != -- ]; do shift; done; shift; exec "$@""#;
    let inner = daemon.command(args);
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", script, "sh"])
        .args(binds)
        .arg("--")
        .arg(inner.as_std().get_program())
        .args(inner.as_std().get_args())
        .env_clear()
        .envs(inner.as_std().get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .expect("sandboxed inboxd did not exit in time")
        .expect("run unshare");
    let out = CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_ne!(out.code(), Some(97), "mount --bind failed\n{out}");
    Some(out)
}

fn config_arg(daemon: &Daemon) -> String {
    daemon.config.to_string_lossy().into_owned()
}

/// The `ok` line of `check` for the only inbox.
fn ok_line(out: &CliOutput) -> &str {
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("ok") && !l.contains("state_dir"))
        .collect();
    assert_eq!(lines.len(), 1, "one ok line\n{out}");
    lines[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_notices_that_separate_bind_mounts_make_moves_copies() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    std::fs::create_dir_all(&inbox.done).unwrap();
    std::fs::create_dir_all(&inbox.failed).unwrap();
    let args = ["check", "--config", &config_arg(&daemon)];

    // Outside the sandbox everything is one mount: nothing to say.
    let plain = daemon.check().await;
    assert_eq!(plain.code(), Some(0), "{plain}");
    assert!(!ok_line(&plain).contains("note"), "{plain}");

    // ReadWritePaths=<inbox> <done> <failed>: three mounts of one file system.
    let Some(out) = in_sandbox(&daemon, &[&inbox.path, &inbox.done, &inbox.failed], &args).await
    else {
        return;
    };
    assert_eq!(out.code(), Some(0), "a working setup, only slower\n{out}");
    let line = ok_line(&out);
    for key in ["done_dir", "failed_dir"] {
        assert!(
            line.contains(&format!("{key} is on another mount than the inbox")),
            "check must say that {key} is on another mount\n{out}"
        );
    }
    assert!(line.contains("moves will be copies"), "{out}");

    // The recommended drop-in: one ReadWritePaths= entry for the common parent.
    let parent = inbox.path.parent().unwrap();
    let out = in_sandbox(&daemon, &[parent], &args)
        .await
        .expect("ran before");
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        !ok_line(&out).contains("note"),
        "one mount, renames stay atomic\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_inside_separate_bind_mounts_warns_and_still_moves_every_file() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    std::fs::create_dir_all(&inbox.done).unwrap();
    std::fs::create_dir_all(&inbox.failed).unwrap();
    let bytes = content(1, 50_000);
    inbox.drop("2024/scan.pdf", &bytes);

    let args = ["once", "--config", &config_arg(&daemon)];
    let Some(out) = in_sandbox(&daemon, &[&inbox.path, &inbox.done, &inbox.failed], &args).await
    else {
        return;
    };
    assert_eq!(out.code(), Some(0), "{out}");
    // Only the daemon sees its sandbox's mounts: it says so at startup.
    let warn: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("done_dir is on another mount"))
        .collect();
    assert_eq!(warn.len(), 1, "one startup warning about done_dir\n{out}");
    // rename(2) fails with EXDEV here; the copy fallback still delivers the file.
    inbox.assert_done("2024/scan.pdf", &bytes);
    assert_object(&s3, &inbox.key("2024/scan.pdf"), &bytes).await;
    inbox.assert_empty();
}

// ---------------------------------------------------------------------------------------------
// A share that is not mounted yet
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_takes_up_an_inbox_whose_folder_appears_later() {
    let s3 = TestS3::start().await;
    // The missing folder is looked for at every rescan.
    let setup = Setup::new().inboxes(2).set("watch", "rescan", "\"300ms\"");
    let mut daemon = Daemon::new(&s3, setup);
    let (in0, in1) = (daemon.inboxes()[0].clone(), daemon.inboxes()[1].clone());
    std::fs::remove_dir(&in1.path).expect("remove in1's folder");

    daemon.start();
    // The other inbox works meanwhile.
    let first = content(1, 10_000);
    in0.drop("a.pdf", &first);
    wait_until(TIMEOUT, "in0's file is done", || in0.is_done("a.pdf")).await;
    assert!(
        daemon.is_running(),
        "inboxd must keep running\n{}",
        daemon.stderr()
    );
    let path = in1.path.to_string_lossy().into_owned();
    let warned: Vec<String> = daemon
        .stdout()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&path) && l.contains("missing"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        warned.len(),
        1,
        "one WARN naming {path}\n{}",
        daemon.stdout()
    );
    // Nothing was created where the share will be mounted.
    assert!(
        !in1.done.exists() && !in1.failed.exists(),
        "done/failed created early"
    );

    // The share is mounted: the folder appears with a file already in it, then another.
    std::fs::create_dir_all(in1.path.join("2024")).unwrap();
    let waiting = content(2, 20_000);
    in1.drop("2024/waiting.pdf", &waiting);
    wait_until(TIMEOUT, "the file already in in1 is done", || {
        in1.is_done("2024/waiting.pdf")
    })
    .await;
    let later = content(3, 30_000);
    in1.drop("later.pdf", &later);
    wait_until(TIMEOUT, "a file dropped later into in1 is done", || {
        in1.is_done("later.pdf")
    })
    .await;
    daemon.stop().await;

    in0.assert_done("a.pdf", &first);
    in1.assert_done("2024/waiting.pdf", &waiting);
    in1.assert_done("later.pdf", &later);
    assert_object(&s3, &in0.key("a.pdf"), &first).await;
    assert_object(&s3, &in1.key("2024/waiting.pdf"), &waiting).await;
    assert_object(&s3, &in1.key("later.pdf"), &later).await;
    assert!(
        daemon.stdout().contains("the inbox folder is there now"),
        "the log must say when the inbox is taken up\n{}",
        daemon.stdout()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_skips_a_missing_inbox_says_so_and_exits_1() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new().inboxes(2));
    let (in0, in1) = (daemon.inboxes()[0].clone(), daemon.inboxes()[1].clone());
    std::fs::remove_dir(&in1.path).unwrap();
    let bytes = content(4, 10_000);
    in0.drop("a.pdf", &bytes);

    let out = daemon.once().await;
    assert_eq!(
        out.code(),
        Some(1),
        "an inbox could not be processed\n{out}"
    );
    in0.assert_done("a.pdf", &bytes);
    assert_object(&s3, &in0.key("a.pdf"), &bytes).await;
    let path = in1.path.to_string_lossy().into_owned();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&path) && l.contains("skipped in this run")),
        "once must say that it skipped {path}\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_missing_inbox_folder_as_an_error() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new().inboxes(2));
    let in1 = daemon.inboxes()[1].clone();
    std::fs::remove_dir(&in1.path).unwrap();

    let out = daemon.check().await;
    assert_eq!(out.code(), Some(1), "{out}");
    let fail: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert_eq!(fail.len(), 1, "{out}");
    assert!(
        fail[0].contains("in1") && fail[0].contains("does not exist"),
        "{out}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("in0")),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// check, as the user the service runs as
// ---------------------------------------------------------------------------------------------

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

fn am_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Gives `dir` to root with `mode` (made if missing).
fn root_owned(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::chown(dir, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The FAIL line that names `what` (an inbox's name, or "state_dir").
fn fail_line<'a>(out: &'a CliOutput, what: &str) -> &'a str {
    out.stdout
        .lines()
        .find(|l| l.starts_with("FAIL") && l.split_whitespace().nth(1) == Some(what))
        .unwrap_or_else(|| panic!("no FAIL line for {what}\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_as_the_service_user_names_each_folder_it_cannot_use() {
    if !am_root() {
        println!("SKIP: switching to another user needs root");
        return;
    }
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    let state = daemon.dir().join("state");
    // The service user owns the test folder (it can read the config and reach every folder);
    // root keeps four folders it may not use: done/ not writable, failed/ not even readable,
    // the state_dir not writable, and an inbox everyone may write into but with the sticky
    // bit, so that files others drop could not be moved out.
    daemon.give_to(NOBODY, NOGROUP);
    root_owned(&inbox.done, 0o755);
    root_owned(&inbox.failed, 0o700);
    root_owned(&state, 0o755);
    root_owned(&inbox.path, 0o1777);
    let config = config_arg(&daemon);

    let out = daemon
        .cli(&["check", "--config", &config, "--user", "nobody"], &[])
        .await;
    assert_eq!(out.code(), Some(1), "{out}");
    let line = fail_line(&out, "in0");
    for want in [
        format!("done_dir {}: not writable as nobody", inbox.done.display()),
        format!(
            "failed_dir {}: not readable as nobody",
            inbox.failed.display()
        ),
        format!(
            "inbox {}: files others drop cannot be moved out of it as nobody: the folder has the sticky bit",
            inbox.path.display()
        ),
    ] {
        assert!(line.contains(&want), "missing {want:?}\n{out}");
    }
    assert!(
        !line.contains("not reachable"),
        "the bucket is fine (probed as root, with the credentials)\n{out}"
    );
    let state_line = fail_line(&out, "state_dir");
    assert!(
        state_line.contains(&state.display().to_string())
            && state_line.contains("not writable as nobody"),
        "{out}"
    );

    // Run by the service user itself, the same checks say the same.
    let mut cmd = daemon.command(&["check", "--config", &config]);
    cmd.uid(NOBODY).gid(NOGROUP);
    let own = cmd.output().await.expect("run check as nobody");
    let own_out = String::from_utf8_lossy(&own.stdout).into_owned();
    assert_eq!(own.status.code(), Some(1), "{own_out}");
    assert!(
        own_out.contains(&format!(
            "done_dir {}: not writable as nobody",
            inbox.done.display()
        )),
        "{own_out}"
    );

    // Root itself may use every folder: all is well, with a note to check as the service user.
    let as_root = daemon.check().await;
    assert_eq!(as_root.code(), Some(0), "{as_root}");
    assert!(as_root.stdout.contains("--user inboxd"), "{as_root}");

    // Fixed: the service user's folders are its own again.
    daemon.give_to(NOBODY, NOGROUP);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&inbox.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fixed = daemon
        .cli(&["check", "--config", &config, "--user", "nobody"], &[])
        .await;
    assert_eq!(fixed.code(), Some(0), "{fixed}");
    assert!(fixed.stdout.contains("folders usable as nobody"), "{fixed}");
    // The checks leave nothing behind.
    for dir in [&inbox.path, &inbox.done, &inbox.failed, &state] {
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{} holds {left:?}", dir.display());
    }

    // A ledger made by root (`inboxd once` run without sudo -u; `inboxd ledger` no longer
    // makes one, it only reads): the folder is the service user's, the database in it is
    // not, and the service could not open it.
    let out = daemon.once().await;
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(state.join("ledger").exists(), "once made no ledger\n{out}");
    let out = daemon
        .cli(&["check", "--config", &config, "--user", "nobody"], &[])
        .await;
    assert_eq!(out.code(), Some(1), "{out}");
    let line = fail_line(&out, "state_dir");
    assert!(
        line.contains("not writable as nobody")
            && line.contains(&format!("{}/ledger", state.display())),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_as_another_user_needs_root_and_a_real_user() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new());
    let config = config_arg(&daemon);
    let unknown = daemon
        .cli(
            &["check", "--config", &config, "--user", "no-such-user-here"],
            &[],
        )
        .await;
    assert_eq!(unknown.code(), Some(2), "a usage error\n{unknown}");
    assert!(
        unknown.stderr.contains("no-such-user-here: no such user"),
        "{unknown}"
    );
    if !am_root() {
        return;
    }
    // Not root, and not that user: refused as a usage error, before anything is checked.
    daemon.give_to(NOBODY, NOGROUP);
    let mut cmd = daemon.command(&["check", "--config", &config, "--user", "root"]);
    cmd.uid(NOBODY).gid(NOGROUP);
    let out = cmd.output().await.expect("run check as nobody");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only root can check as another user"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The unit's sandbox, as systemd-analyze scores it
// ---------------------------------------------------------------------------------------------

/// `systemd-analyze ARGS`: (stdout, stderr), or `None` (after saying so) when it is missing.
fn systemd_analyze(args: &[&str]) -> Option<(String, String)> {
    match std::process::Command::new("systemd-analyze")
        .args(args)
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "systemd-analyze {args:?}: {out:?}");
            Some((
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
        Err(e) => {
            println!(
                "SKIP: systemd-analyze cannot run here ({e}); the unit's score is not checked"
            );
            None
        }
    }
}

/// The system calls a filter group stands for, nested groups expanded.
fn syscalls(group: &str) -> std::collections::BTreeSet<String> {
    let Some((text, _)) = systemd_analyze(&["syscall-filter", group]) else {
        return Default::default();
    };
    let mut out = std::collections::BTreeSet::new();
    for word in text.lines().map(str::trim) {
        if word.is_empty() || word.starts_with('#') || word == group {
            continue;
        }
        match word.strip_prefix('@') {
            Some(_) => out.extend(syscalls(word)),
            None => {
                out.insert(word.to_owned());
            }
        }
    }
    out
}

#[test]
fn the_unit_scores_an_exposure_of_1_5_or_lower_and_keeps_what_inboxd_needs() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/inboxd.service");
    let unit_arg = unit.to_string_lossy().into_owned();
    let Some((report, warnings)) = systemd_analyze(&["security", "--offline=yes", &unit_arg])
    else {
        return;
    };
    // Every directive is one systemd knows (an unknown one is ignored with a warning, and
    // would protect nothing).
    assert!(
        !warnings.contains("Unknown") && !warnings.contains("ignoring"),
        "systemd-analyze warns about the unit:\n{warnings}"
    );
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for inboxd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    println!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 1.5, "exposure {exposure} > 1.5:\n{report}");

    // What the tightening must not take away: the lease capability (a writer that pauses is
    // never taken for done), and the calls for leases, inotify, moves and the ledger.
    let text = std::fs::read_to_string(&unit).expect("read the unit");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for needed in [
        "CapabilityBoundingSet=CAP_LEASE",
        "AmbientCapabilities=CAP_LEASE",
    ] {
        assert!(lines.contains(&needed), "{needed} is gone from the unit");
    }
    let mut allowed = std::collections::BTreeSet::new();
    let mut denied = std::collections::BTreeSet::new();
    for filter in lines
        .iter()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (deny, groups) = match filter.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, filter),
        };
        for group in groups.split_whitespace() {
            let calls = if group.starts_with('@') {
                syscalls(group)
            } else {
                std::iter::once(group.to_owned()).collect()
            };
            if deny {
                denied.extend(calls);
            } else {
                allowed.extend(calls);
            }
        }
    }
    if allowed.is_empty() {
        return; // systemd-analyze went missing in between
    }
    for call in [
        "fcntl",
        "flock",
        "inotify_init1",
        "inotify_add_watch",
        "inotify_rm_watch",
        "rename",
        "renameat",
        "renameat2",
        "linkat",
        "unlinkat",
        "openat",
        "openat2",
        "statx",
        "newfstatat",
        "getdents64",
        "copy_file_range",
        "fsync",
        "fdatasync",
        "epoll_wait",
        "socket",
        "connect",
        "sendto",
        "getrandom",
    ] {
        assert!(
            allowed.contains(call) && !denied.contains(call),
            "the unit's SystemCallFilter= denies {call}"
        );
    }
}
