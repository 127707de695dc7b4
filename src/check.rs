//! `inboxd check`: the configuration (already loaded), every folder as the service user (in a
//! child process switched to that user when run as root, so that this process keeps root's
//! credentials for the bucket probes), and every bucket: reachable, writable with the inbox's
//! object options, and what the server enforces. The folder checks themselves are
//! [`crate::preflight`]'s. Exit codes follow the binary's one rule ([`crate::run::EXIT_REFUSED`],
//! [`crate::run::EXIT_CONFIG_ERROR`]).

use std::future::Future;
use std::process::ExitCode;

use crate::config::Settings;
use crate::run::{EXIT_CONFIG_ERROR as CONFIG_ERROR, EXIT_REFUSED as REFUSED};

/// `check`: the configuration (already loaded), every folder as the service user, every
/// bucket. Exit 2 for a configuration error, 1 for anything missing, unreachable or refused.
pub fn check(settings: Settings, user: Option<&str>) -> ExitCode {
    if let Err(e) = settings.check_paths() {
        eprintln!("inboxd: {e}");
        return ExitCode::from(CONFIG_ERROR);
    }
    let folders = match folders_as(&settings, user) {
        Ok(f) => f,
        Err(Usage(e)) => {
            eprintln!("inboxd: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    runtime_then(|| check_all(settings, folders))
}

/// A wrong `--user`: a usage error.
struct Usage(String);

/// What the folder checks found: the report, or why they could not run as that user.
enum Folders {
    Checked(crate::preflight::Report),
    /// The checks as the user could not run (the configuration file is not readable for
    /// them, typically): the reason.
    NotRun(String),
}

/// Runs the folder checks as `user` (a child process switched to that user when we are root),
/// or as the current user.
fn folders_as(settings: &Settings, user: Option<&str>) -> Result<Folders, Usage> {
    let me = current_user_name();
    let Some(name) = user else {
        return Ok(Folders::Checked(crate::preflight::check(settings, &me)));
    };
    let account = lookup_user(name).ok_or_else(|| Usage(format!("--user {name}: no such user")))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == account.uid {
        return Ok(Folders::Checked(crate::preflight::check(settings, name)));
    }
    if euid != 0 {
        return Err(Usage(format!(
            "--user {name}: only root can check as another user (run it with sudo, or as {name})"
        )));
    }
    Ok(check_folders_in_child(settings, &account))
}

/// Re-runs this binary as `account` (groups, group, user switched in the child only; this
/// process keeps root for the bucket probes) to check the folders, and reads its report.
fn check_folders_in_child(settings: &Settings, account: &Account) -> Folders {
    use std::os::unix::process::CommandExt as _;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Folders::NotRun(format!("cannot find this program to re-run it: {e}")),
    };
    // Absolute, and run from "/": the user may not be allowed into our current folder.
    let config = std::fs::canonicalize(&settings.file).unwrap_or_else(|_| settings.file.clone());
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("check-folders")
        .arg("--config")
        .arg(&config)
        .current_dir("/")
        .stdin(std::process::Stdio::null());
    let (uid, gid, groups) = (account.uid, account.gid, account.groups.clone());
    // SAFETY: between fork and exec only async-signal-safe calls (setgroups, setgid, setuid)
    // on data allocated before the fork. Done here rather than with CommandExt::uid/gid,
    // which would drop the user's supplementary groups (and with them group access to the
    // folders), and whose groups() is not stable.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            return Folders::NotRun(format!("cannot run the checks as {}: {e}", account.name));
        }
    };
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.trim().trim_start_matches("inboxd: ");
        return Folders::NotRun(format!("as {}: {why}", account.name));
    }
    match serde_json::from_slice(&out.stdout) {
        Ok(report) => Folders::Checked(report),
        Err(e) => Folders::NotRun(format!(
            "the checks as {} answered nonsense: {e}",
            account.name
        )),
    }
}

/// The hidden `check-folders`: the folder checks as the current user, as JSON.
pub fn check_folders(settings: &Settings) -> ExitCode {
    let report = crate::preflight::check(settings, &current_user_name());
    match serde_json::to_string(&report) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("inboxd: {e}");
            ExitCode::from(REFUSED)
        }
    }
}

async fn check_all(settings: Settings, folders: Folders) -> ExitCode {
    use crate::upload::capabilities;
    let client = crate::upload::s3::client(&settings.s3, &settings.upload).await;
    let mut all_ok = true;
    let (state_problems, mut inbox_problems, user) = match folders {
        Folders::Checked(r) => (
            // The line names the state_dir already.
            r.state_dir
                .iter()
                .map(|p| p.detail.clone())
                .collect::<Vec<_>>(),
            r.inboxes
                .into_iter()
                .map(|i| i.problems.iter().map(ToString::to_string).collect())
                .collect::<Vec<Vec<String>>>(),
            Some(r.user),
        ),
        Folders::NotRun(why) => {
            println!("FAIL  folders  not checked: {why}");
            all_ok = false;
            (Vec::new(), Vec::new(), None)
        }
    };
    inbox_problems.resize(settings.inboxes.len(), Vec::new());
    let as_user = user
        .as_deref()
        .map(|u| format!(" as {u}"))
        .unwrap_or_default();
    if state_problems.is_empty() {
        if user.is_some() {
            println!(
                "ok    state_dir  {}  (usable{as_user})",
                settings.state_dir.display()
            );
        }
    } else {
        all_ok = false;
        println!(
            "FAIL  state_dir  {}  {}",
            settings.state_dir.display(),
            state_problems.join("; ")
        );
    }
    let mut probed: Vec<String> = Vec::new();
    for (inbox, mut problems) in settings.inboxes.iter().zip(inbox_problems) {
        let target = format!("s3://{}/{}", inbox.bucket, inbox.prefix);
        let reachable =
            crate::upload::s3::probe(&client, &inbox.bucket, &inbox.prefix, &inbox.object).await;
        let server = match reachable {
            Err(e) => {
                let endpoint = settings.s3.endpoint.as_deref().unwrap_or("AWS S3");
                problems.push(format!("{e} (endpoint {endpoint})"));
                None
            }
            // Once per bucket: what the server enforces itself (see upload::capabilities).
            Ok(()) if probed.contains(&inbox.bucket) => None,
            Ok(()) => {
                probed.push(inbox.bucket.clone());
                let caps = capabilities::probe(&client, &inbox.bucket, &inbox.prefix).await;
                Some(match caps {
                    Ok(caps) => caps.describe(),
                    Err(e) => format!(
                        "could not be probed ({e}); inboxd will look at each key before writing it"
                    ),
                })
            }
        };
        if problems.is_empty() {
            let notes: String = [
                ("done_dir", &inbox.done_dir),
                ("failed_dir", &inbox.failed_dir),
            ]
            .into_iter()
            .filter_map(|(key, dir)| {
                let what = crate::mounts::apart(&inbox.path, dir)?.describe()?;
                Some(format!("; note: {key} {what}"))
            })
            .collect();
            let folders = if user.is_some() {
                format!("folders usable{as_user}")
            } else {
                "folders not checked".to_owned()
            };
            println!(
                "ok    {}  {}  -> {target}  (reachable, credentials accepted, {folders}{notes})",
                inbox.name,
                inbox.path.display()
            );
            if let Some(server) = server {
                println!("      server of bucket {}: {server}", inbox.bucket);
            }
        } else {
            all_ok = false;
            println!(
                "FAIL  {}  {}  -> {target}  {}",
                inbox.name,
                inbox.path.display(),
                problems.join("; ")
            );
        }
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if user.as_deref() == Some("root") && unsafe { libc::geteuid() } == 0 {
        println!(
            "note: the folders were checked as root, who may use any of them; check them as the \
             service user with --user inboxd"
        );
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(REFUSED)
    }
}

/// A user account, as `--user` names it.
struct Account {
    name: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
    /// Every group the user is in, the primary one included.
    groups: Vec<libc::gid_t>,
}

/// Looks the user up (getpwnam_r, getgrouplist): the system's own answer, NSS included.
fn lookup_user(name: &str) -> Option<Account> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value for getpwnam_r to fill in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and `buf` outlives the use of `pwd`'s
    // string fields (none are read).
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` holds `n` entries; getgrouplist writes at most `n` and sets `n` to
        // the number it needs.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            break;
        }
        if n as usize <= groups.len() {
            groups = vec![gid];
            break;
        }
        groups.resize(n as usize, 0);
    }
    Some(Account {
        name: name.to_owned(),
        uid,
        gid,
        groups,
    })
}

/// The name of the user this process runs as (for messages), or its uid.
fn current_user_name() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: as in lookup_user.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; pw_name points into `buf`, read below
    // while `buf` lives.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: getpwuid_r succeeded: pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    format!("uid {uid}")
}

fn runtime_then<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ExitCode>,
{
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("inboxd: cannot start the async runtime: {e}");
            ExitCode::from(REFUSED)
        }
    }
}
