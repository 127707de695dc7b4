//! Hostile file systems: links that lead out of an inbox, FIFOs, sockets, failed/ on another
//! file system, files that cannot be read yet, originals that cannot be removed. Whatever an
//! inbox holds, nothing behind a link is read, uploaded or moved, nothing blocks the other
//! files, and the daemon keeps running.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};

use support::s3::TestS3;
use support::{
    BUCKET, Daemon, Op, Setup, TIMEOUT, content, fingerprint, strip_ansi, toml_str, wait_until,
};

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

fn reason_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".reason.txt");
    name.into()
}

fn exists_here(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// A link moved into failed/ as the link: same target text, a reason naming the target.
#[track_caller]
fn assert_link_failed(failed: &Path, rel: &str, points_to: &Path) {
    let moved = failed.join(rel);
    let meta = fs::symlink_metadata(&moved).unwrap_or_else(|e| {
        panic!(
            "failed/{rel}: {e}; failed/ holds {:?}",
            support::files_under(failed)
        )
    });
    assert!(
        meta.file_type().is_symlink(),
        "failed/{rel} is not the link itself"
    );
    assert_eq!(
        fs::read_link(&moved).unwrap(),
        points_to,
        "failed/{rel} points elsewhere"
    );
    let reason = fs::read_to_string(reason_path(&moved)).expect("reason file");
    assert!(
        reason.contains("symbolic link") && reason.contains(&*points_to.to_string_lossy()),
        "the reason for {rel} does not say where the link pointed:\n{reason}"
    );
}

/// Lines of the daemon's log that are ERRORs and mention `needle`.
fn error_lines(daemon: &Daemon, needle: &str) -> usize {
    strip_ansi(&daemon.all_stdout())
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_never_lead_out_of_the_inbox() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new().inboxes(2));
    let inbox = daemon.inboxes()[0].clone();
    let other = daemon.inboxes()[1].clone();
    // A folder the service may write to, and another inbox's done/ with a finished file in it.
    let elsewhere = daemon.dir().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("old.pdf"), content(1, 5_000)).unwrap();
    let secret = daemon.dir().join("secret.pdf");
    fs::write(&secret, content(2, 7_000)).unwrap();
    let secret_before = fingerprint(&secret);

    // Present before the start (startup sweep and the first recursive watch) ...
    symlink(&elsewhere, inbox.file("cache.tmp")).unwrap(); // an ignored name, as in the report
    symlink("/", inbox.file("root")).unwrap();
    fs::create_dir_all(inbox.file("sub")).unwrap();
    symlink("/", inbox.file("sub/deep-root")).unwrap();
    symlink(&other.done, inbox.file("their-done")).unwrap();
    let first = content(3, 20_000);
    inbox.drop("first.pdf", &first);
    daemon.start();
    wait_until(TIMEOUT, "first.pdf uploaded", || inbox.is_done("first.pdf")).await;

    // A link to `/` must not cost a watch per folder on the machine: the two inbox folders
    // and `sub` are all there is to watch.
    let watches = daemon.inotify_watches();
    assert!(watches <= 3, "{watches} inotify watches for 3 folders");

    // ... and after it (kernel events).
    symlink(&secret, inbox.file("file-link.pdf")).unwrap();
    symlink("/", inbox.file("late-root")).unwrap();
    // A new folder with a link to `/` and a file in it: the folder gets its watch, the link
    // none.
    fs::create_dir(inbox.file("new")).unwrap();
    symlink("/", inbox.file("new/up")).unwrap();
    let in_new = content(15, 6_000);
    inbox.drop("new/in.pdf", &in_new);
    wait_until(TIMEOUT, "new/in.pdf uploaded", || {
        inbox.is_done("new/in.pdf")
    })
    .await;
    let watches = daemon.inotify_watches();
    assert!(watches <= 4, "{watches} inotify watches for 4 folders");
    // Files appear behind the links: in the folder behind cache.tmp, and in the other
    // inbox's done/ (its own upload puts one there).
    let theirs = content(4, 9_000);
    other.drop("theirs.pdf", &theirs);
    wait_until(TIMEOUT, "theirs.pdf done in the other inbox", || {
        other.is_done("theirs.pdf")
    })
    .await;
    let new_behind = content(5, 11_000);
    fs::write(elsewhere.join("new.pdf"), &new_behind).unwrap();
    let old_behind = fingerprint(&elsewhere.join("old.pdf"));
    // Look everywhere again, then let an ordinary file pass behind all of that.
    daemon.sighup();
    let last = content(6, 15_000);
    inbox.drop("last.pdf", &last);
    wait_until(
        TIMEOUT,
        "the links in failed/ and last.pdf uploaded",
        || {
            [
                "root",
                "sub/deep-root",
                "their-done",
                "file-link.pdf",
                "late-root",
                "new/up",
            ]
            .iter()
            .all(|rel| exists_here(&reason_path(&inbox.failed.join(rel))))
                && inbox.is_done("last.pdf")
        },
    )
    .await;
    assert!(daemon.is_running(), "the daemon stopped");
    daemon.stop().await;

    assert_link_failed(&inbox.failed, "root", Path::new("/"));
    assert_link_failed(&inbox.failed, "sub/deep-root", Path::new("/"));
    assert_link_failed(&inbox.failed, "late-root", Path::new("/"));
    assert_link_failed(&inbox.failed, "new/up", Path::new("/"));
    inbox.assert_done("new/in.pdf", &in_new);
    assert_link_failed(&inbox.failed, "their-done", &other.done);
    assert_link_failed(&inbox.failed, "file-link.pdf", &secret);
    // The ignored name stays where it is, still a link; nothing behind it moved.
    assert!(
        fs::symlink_metadata(inbox.file("cache.tmp"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(fingerprint(&elsewhere.join("old.pdf")), old_behind);
    assert_eq!(fs::read(elsewhere.join("new.pdf")).unwrap(), new_behind);
    assert_eq!(
        fingerprint(&secret),
        secret_before,
        "the link target was touched"
    );
    other.assert_done("theirs.pdf", &theirs);
    assert!(!exists_here(&other.file("theirs.pdf")));
    inbox.assert_done("first.pdf", &first);
    inbox.assert_done("last.pdf", &last);
    // Exactly the ordinary files reached the bucket, nothing from behind a link.
    let mut want = vec![
        inbox.key("new/in.pdf"),
        inbox.key("first.pdf"),
        inbox.key("last.pdf"),
        other.key("theirs.pdf"),
    ];
    want.sort();
    let mut got = s3.list(BUCKET).await;
    got.sort();
    assert_eq!(got, want, "objects in the bucket");
    for rel in [
        "old.pdf",
        "new.pdf",
        "cache.tmp/new.pdf",
        "their-done/theirs.pdf",
    ] {
        assert_eq!(
            s3.requests_for(Op::PutObject, &inbox.key(rel)),
            0,
            "{rel} was sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_and_sockets_go_to_failed_unopened() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(&s3, Setup::new());
    let inbox = daemon.inbox().clone();
    support::mkfifo(&inbox.file("pipe.pdf"));
    let _listener = std::os::unix::net::UnixListener::bind(inbox.file("sock")).unwrap();
    daemon.start();
    // A FIFO that appears later, with nobody ever writing to it: opening it for reading
    // would block for good.
    support::mkfifo(&inbox.file("late.pdf"));
    let after = content(7, 12_000);
    inbox.drop("after.pdf", &after);
    wait_until(
        TIMEOUT,
        "FIFOs and socket in failed/, after.pdf uploaded",
        || {
            ["pipe.pdf", "late.pdf", "sock"].iter().all(|rel| {
                exists_here(&reason_path(&inbox.failed.join(rel))) && !exists_here(&inbox.file(rel))
            }) && inbox.is_done("after.pdf")
        },
    )
    .await;
    daemon.stop().await;

    for (rel, what) in [
        ("pipe.pdf", "FIFO"),
        ("late.pdf", "FIFO"),
        ("sock", "socket"),
    ] {
        let moved = inbox.failed.join(rel);
        let ft = fs::symlink_metadata(&moved).unwrap().file_type();
        use std::os::unix::fs::FileTypeExt as _;
        assert!(
            ft.is_fifo() || ft.is_socket(),
            "failed/{rel} is no longer the special file"
        );
        let reason = fs::read_to_string(reason_path(&moved)).unwrap();
        assert!(reason.contains(what), "reason for {rel}:\n{reason}");
        assert_eq!(s3.requests_for(Op::PutObject, &inbox.key(rel)), 0);
    }
    inbox.assert_done("after.pdf", &after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specials_and_links_with_failed_on_another_file_system() {
    let shm = tempfile::tempdir_in("/dev/shm").expect("this test needs /dev/shm (tmpfs)");
    let failed = shm.path().join("failed");
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(
        &s3,
        Setup::new().inbox_set_at(0, "failed_dir", &toml_str(&failed.to_string_lossy())),
    );
    let inbox = daemon.inbox().clone();
    fs::create_dir_all(&failed).unwrap();
    assert_ne!(
        fs::metadata(&inbox.path).unwrap().dev(),
        fs::metadata(&failed).unwrap().dev(),
        "failed/ must be on another file system for this test"
    );
    let secret = daemon.dir().join("secret.pdf");
    fs::write(&secret, content(8, 30_000)).unwrap();
    let secret_before = fingerprint(&secret);
    let folder = daemon.dir().join("folder");
    fs::create_dir_all(&folder).unwrap();
    fs::write(folder.join("inside.pdf"), content(9, 1_000)).unwrap();

    support::mkfifo(&inbox.file("pipe.pdf"));
    let _listener = std::os::unix::net::UnixListener::bind(inbox.file("sock")).unwrap();
    symlink(&secret, inbox.file("link.pdf")).unwrap();
    symlink(&folder, inbox.file("folder-link")).unwrap();
    daemon.start();
    let after = content(10, 12_000);
    inbox.drop("after.pdf", &after);
    wait_until(
        TIMEOUT,
        "links in failed/, after.pdf uploaded, one ERROR per special file",
        || {
            exists_here(&reason_path(&failed.join("link.pdf")))
                && exists_here(&reason_path(&failed.join("folder-link")))
                && inbox.is_done("after.pdf")
                && error_lines(&daemon, "path=pipe.pdf") == 1
                && error_lines(&daemon, "path=sock") == 1
        },
    )
    .await;
    // Ordinary files keep flowing after all of it.
    let later = content(11, 3_000);
    inbox.drop("later.pdf", &later);
    wait_until(TIMEOUT, "later.pdf uploaded", || inbox.is_done("later.pdf")).await;
    assert!(daemon.is_running(), "the daemon stopped");
    daemon.stop().await;

    // The links were recreated in failed/ as links; their targets were not copied.
    assert_link_failed(&failed, "link.pdf", &secret);
    assert_link_failed(&failed, "folder-link", &folder);
    assert!(!exists_here(&inbox.file("link.pdf")) && !exists_here(&inbox.file("folder-link")));
    assert_eq!(fingerprint(&secret), secret_before);
    assert!(folder.join("inside.pdf").is_file());
    // The FIFO and the socket cannot be renamed there and are never opened: they stay put,
    // with one ERROR line each, and nothing of them is in failed/.
    for rel in ["pipe.pdf", "sock"] {
        assert!(exists_here(&inbox.file(rel)), "{rel} left the inbox");
        assert!(!exists_here(&failed.join(rel)), "{rel} is in failed/");
        assert_eq!(
            error_lines(&daemon, &format!("path={rel}")),
            1,
            "ERROR lines for {rel}"
        );
    }
    let leftovers: Vec<String> = support::files_under(&failed)
        .into_iter()
        .filter(|n| n.contains(".inboxd-move"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left in failed/: {leftovers:?}"
    );
    inbox.assert_done("after.pdf", &after);
    inbox.assert_done("later.pdf", &later);
    let mut got = s3.list(BUCKET).await;
    got.sort();
    assert_eq!(got, vec![inbox.key("after.pdf"), inbox.key("later.pdf")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_files_are_retried_before_they_fail() {
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(
        &s3,
        Setup::new().set("upload", "retry_later", "\"300ms\"").set(
            "upload",
            "unreadable_retry_for",
            "\"3s\"",
        ),
    );
    let inbox = daemon.inbox().clone();
    // Root reads everything: the daemon runs as nobody, the files belong to root and are
    // private from the first byte.
    daemon.give_to(NOBODY, NOGROUP);
    daemon.start_as(NOBODY, NOGROUP);
    let soon = content(12, 40_000);
    let never = content(13, 20_000);
    for (rel, bytes) in [("soon.pdf", &soon), ("never.pdf", &never)] {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(inbox.file(rel))
            .unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
    }
    wait_until(TIMEOUT, "soon.pdf deferred for want of permission", || {
        strip_ansi(&daemon.stdout())
            .lines()
            .any(|l| l.contains("soon.pdf") && l.contains("cannot read the file yet"))
    })
    .await;
    assert!(
        exists_here(&inbox.file("soon.pdf")),
        "soon.pdf left before it was readable"
    );
    // The permission arrives late (a chmod after the copy): the file goes through.
    fs::set_permissions(inbox.file("soon.pdf"), fs::Permissions::from_mode(0o644)).unwrap();
    wait_until(TIMEOUT, "soon.pdf uploaded, never.pdf failed", || {
        inbox.is_done("soon.pdf") && exists_here(&reason_path(&inbox.failed.join("never.pdf")))
    })
    .await;
    daemon.stop().await;
    inbox.assert_done("soon.pdf", &soon);
    support::assert_object(&s3, &inbox.key("soon.pdf"), &soon).await;
    let reason = fs::read_to_string(reason_path(&inbox.failed.join("never.pdf"))).unwrap();
    assert!(
        reason.contains("ermission denied") && reason.contains("3s"),
        "{reason}"
    );
    assert_eq!(s3.requests_for(Op::PutObject, &inbox.key("never.pdf")), 0);

    // The batch lines and the last line count the same files the same way: never.pdf is
    // failed once (it is in failed/), not also left; its retry rounds are no news.
    let end = daemon.stop_line();
    for (key, want) in [
        ("uploaded", 1),
        ("failed", 1),
        ("deferred", 0),
        ("left_in_inbox", 0),
    ] {
        assert_eq!(
            support::field(&end, key),
            want.to_string(),
            "{key}: {end:?}"
        );
        if key == "uploaded" || key == "failed" {
            assert_eq!(daemon.batch_total(key), want, "{key} over the batch lines");
        }
    }
    let log = strip_ansi(&daemon.stdout());
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("never.pdf") && l.contains("cannot read the file yet"))
            .count(),
        1,
        "one line when it began to wait, none per retry round:\n{log}"
    );
    inbox.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_that_cannot_be_removed_is_copied_only_once() {
    let shm = tempfile::tempdir_in("/dev/shm").expect("this test needs /dev/shm (tmpfs)");
    let done = shm.path().join("done");
    let s3 = TestS3::start().await;
    let mut daemon = Daemon::new(
        &s3,
        Setup::new().inbox_set_at(0, "done_dir", &toml_str(&done.to_string_lossy())),
    );
    let inbox = daemon.inbox().clone();
    fs::create_dir_all(&done).unwrap();
    support::chown_tree(shm.path(), NOBODY, NOGROUP);
    daemon.give_to(NOBODY, NOGROUP);
    // A sticky inbox owned by root, the file owned by root: nobody may read it but not remove
    // it (the rename to another file system fails anyway, so the move is a copy).
    fs::set_permissions(&inbox.path, fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::lchown(&inbox.path, Some(0), Some(0)).unwrap();
    let bytes = content(14, 50_000);
    inbox.drop("stuck.pdf", &bytes);
    daemon.start_as(NOBODY, NOGROUP);
    let copied = "the original cannot be removed";
    wait_until(TIMEOUT, "stuck.pdf copied to done/", || {
        error_lines(&daemon, copied) == 1
    })
    .await;
    // Across a restart the same original is found again: it is only removed, never copied.
    daemon.stop().await;
    daemon.start_as(NOBODY, NOGROUP);
    wait_until(
        TIMEOUT,
        "the restarted daemon tries removing it again",
        || error_lines(&daemon, "already copied") == 1 || support::files_under(&done).len() > 1,
    )
    .await;
    daemon.stop().await;
    assert_eq!(
        support::files_under(&done),
        vec!["stuck.pdf".to_owned()],
        "copies in done/"
    );
    assert_eq!(fs::read(done.join("stuck.pdf")).unwrap(), bytes);
    assert_eq!(s3.requests_for(Op::PutObject, &inbox.key("stuck.pdf")), 1);

    // Once it can be removed, the next look removes it, still without a second copy.
    std::os::unix::fs::lchown(inbox.file("stuck.pdf"), Some(NOBODY), Some(NOGROUP)).unwrap();
    daemon.start_as(NOBODY, NOGROUP);
    wait_until(TIMEOUT, "the original removed", || {
        !exists_here(&inbox.file("stuck.pdf"))
    })
    .await;
    daemon.stop().await;
    assert_eq!(
        support::files_under(&done),
        vec!["stuck.pdf".to_owned()],
        "copies in done/"
    );
}
