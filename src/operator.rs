//! Commands for the operator beside the daemon: `inboxd status` (asks the running daemon
//! through its operations listener; without one, looks at the folders), `inboxd ledger`
//! (asks the running daemon; without one, reads a copy of the ledger) and `inboxd retry`
//! (sends files from failed/ through the pipeline again). None ever writes the ledger.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{InboxSettings, Settings};

/// `GET /status` from the daemon at `addr`: the JSON text, or why not.
pub fn fetch_status(addr: SocketAddr) -> Result<String, String> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("no daemon answers at http://{addr} ({e})"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or("not an HTTP answer".to_owned())?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "the daemon answered {}",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(body.to_owned())
}

/// Why `GET /ledger` gave no ledger.
#[derive(Debug)]
pub enum Asked {
    /// Nothing (or nothing that knows `/ledger`) answers: look at the ledger itself.
    NoAnswer(String),
    /// The answer began and broke off: what was printed is not the whole ledger.
    BrokeOff(String),
}

/// How long the daemon may take to begin its answer, and then between two chunks of it.
const LEDGER_WAIT: Duration = Duration::from_secs(30);

/// `GET /ledger` from the daemon at `addr`, its lines copied to `out` as they come.
pub fn fetch_ledger(addr: SocketAddr, out: &mut dyn std::io::Write) -> Result<(), Asked> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Asked::NoAnswer(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(fetch_ledger_async(addr, out))
}

async fn fetch_ledger_async(addr: SocketAddr, out: &mut dyn std::io::Write) -> Result<(), Asked> {
    use http_body_util::BodyExt as _;
    let no_answer =
        |why: String| Asked::NoAnswer(format!("no daemon answers at http://{addr} ({why})"));
    let stream =
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(no_answer(e.to_string())),
            Err(_) => return Err(no_answer("no connection within 5 s".to_owned())),
        };
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| no_answer(e.to_string()))?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/ledger")
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| no_answer(e.to_string()))?;
    let res = match tokio::time::timeout(LEDGER_WAIT, send.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(no_answer(e.to_string())),
        Err(_) => return Err(no_answer(format!("no answer within {LEDGER_WAIT:?}"))),
    };
    if res.status() != hyper::StatusCode::OK {
        return Err(no_answer(format!(
            "GET /ledger answered {}; an inboxd older than this one?",
            res.status()
        )));
    }
    let mut body = res.into_body();
    loop {
        let frame = match tokio::time::timeout(LEDGER_WAIT, body.frame()).await {
            Ok(None) => return Ok(()),
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => {
                return Err(Asked::BrokeOff(format!(
                    "the daemon's answer broke off ({e}); its log says why"
                )));
            }
            Err(_) => {
                return Err(Asked::BrokeOff(format!(
                    "the daemon sent nothing for {LEDGER_WAIT:?}"
                )));
            }
        };
        if let Some(data) = frame.data_ref() {
            match out.write_all(data) {
                Ok(()) => {}
                // The reader went away (`inboxd ledger | head`): not an error of ours.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(Asked::BrokeOff(format!("cannot write: {e}"))),
            }
        }
    }
}

/// A human-readable summary of `/status`.
pub fn render_status(json: &str) -> Result<String, String> {
    let s: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut out = format!(
        "inboxd {}, running since {}; pipeline {}; S3 {}\n\n",
        s["version"].as_str().unwrap_or("?"),
        s["started_at"].as_str().unwrap_or("?"),
        match s["stuck_stage"].as_str() {
            Some(stage) => format!("STUCK in {stage}"),
            None => "healthy".to_owned(),
        },
        if s["s3"]["up"].as_bool() == Some(false) {
            "DOWN"
        } else {
            "up"
        }
    );
    out.push_str(&format!(
        "{:<20} {:>8} {:>14}  state\n",
        "inbox", "waiting", "oldest waiting"
    ));
    for i in s["inboxes"].as_array().into_iter().flatten() {
        let state = match (i["stalled"].as_bool(), i["paused"].as_str()) {
            (Some(true), _) => "file system not answering".to_owned(),
            (_, Some(why)) => format!("paused: {why}"),
            _ => "ok".to_owned(),
        };
        out.push_str(&format!(
            "{:<20} {:>8} {:>12.0} s  {state}\n",
            i["name"].as_str().unwrap_or("?"),
            i["backlog"].as_u64().unwrap_or(0),
            i["oldest_pending_seconds"].as_f64().unwrap_or(0.0),
        ));
        // A shared inbox: every host seen on it.
        for h in i["hosts"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  host {:<16} heartbeat {:>5} s ago, {} claimed{}\n",
                h["host"].as_str().unwrap_or("?"),
                h["heartbeat_age_secs"].as_u64().unwrap_or(0),
                h["claimed"].as_u64().unwrap_or(0),
                if h["alive"].as_bool() == Some(false) {
                    " (no heartbeat: taken for dead)"
                } else {
                    ""
                }
            ));
        }
    }
    let failures = s["recent_failures"].as_array().cloned().unwrap_or_default();
    if !failures.is_empty() {
        out.push_str("\nrecent failures (newest first):\n");
        for f in failures {
            out.push_str(&format!(
                "  {}  {}  {}: {}\n",
                f["at"].as_str().unwrap_or("?"),
                f["inbox"].as_str().unwrap_or("?"),
                f["path"].as_str().unwrap_or("?"),
                f["reason"].as_str().unwrap_or("?"),
            ));
        }
    }
    Ok(out)
}

/// Without a daemon: what the folders hold (files waiting in each inbox, files in failed/
/// with the first line of their reason). Reads nothing but the folders.
pub fn offline_status(settings: &Settings) -> String {
    let mut out = String::from("no daemon answers; what the folders hold:\n\n");
    for inbox in &settings.inboxes {
        let waiting = regular_files(&inbox.path, &[&inbox.done_dir, &inbox.failed_dir]);
        let failed = failed_files(inbox);
        out.push_str(&format!(
            "{}: {} waiting in {}, {} in {}\n",
            inbox.name,
            waiting.len(),
            inbox.path.display(),
            failed.len(),
            inbox.failed_dir.display()
        ));
        for rel in failed.iter().take(20) {
            let reason = reason_line(&inbox.failed_dir, rel);
            out.push_str(&format!(
                "  failed: {}: {reason}\n",
                crate::telemetry::escape(rel)
            ));
        }
    }
    out
}

/// Regular files below `dir` (not through links), skipping the folders in `skip`.
fn regular_files(dir: &Path, skip: &[&PathBuf]) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| !skip.iter().any(|s| e.path() == s.as_path()))
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .filter_map(|e| e.path().strip_prefix(dir).ok().map(Path::to_path_buf))
        .collect()
}

/// What failed/ holds besides reason files, relative to it.
fn failed_files(inbox: &InboxSettings) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = regular_files(&inbox.failed_dir, &[])
        .into_iter()
        .filter(|p| !is_reason_file(p))
        .collect();
    files.sort();
    files
}

/// `x.reason.txt`, or `x.reason (2).txt` when a reason file of that name was there already.
fn is_reason_file(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if name.ends_with(".reason.txt") {
        return true;
    }
    name.strip_suffix(").txt")
        .and_then(|n| n.rsplit_once(".reason ("))
        .is_some_and(|(_, digits)| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

fn reason_path(failed_dir: &Path, rel: &Path) -> PathBuf {
    let mut name = failed_dir.join(rel).into_os_string();
    name.push(".reason.txt");
    PathBuf::from(name)
}

fn reason_line(failed_dir: &Path, rel: &Path) -> String {
    std::fs::read_to_string(reason_path(failed_dir, rel))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("reason:"))
                .map(|l| l.trim_start_matches("reason:").trim().to_owned())
        })
        .unwrap_or_else(|| "(no reason file)".to_owned())
}

/// One file `retry` handled.
#[derive(Debug, PartialEq, Eq)]
pub enum Retried {
    Moved {
        inbox: String,
        rel: PathBuf,
    },
    /// Left in failed/: a file of that name is in the inbox already, or it cannot be moved.
    Skipped {
        inbox: String,
        rel: PathBuf,
        why: String,
    },
}

/// Moves files from failed/ back into their inbox, under the same relative path, and removes
/// their reason files: the pipeline takes them again (the ledger knows they were moved to
/// failed/, so they are uploaded again rather than failed again). `only` limits it to those
/// paths (relative to failed/, or absolute inside it); empty means everything.
pub fn retry(settings: &Settings, inbox: Option<&str>, only: &[PathBuf]) -> Vec<Retried> {
    let mut done = Vec::new();
    for i in settings
        .inboxes
        .iter()
        .filter(|i| inbox.is_none_or(|n| n == i.name))
    {
        let wanted: Vec<PathBuf> = only
            .iter()
            .filter_map(|p| match p.strip_prefix(&i.failed_dir) {
                Ok(rel) => Some(rel.to_path_buf()),
                Err(_) if p.is_relative() => Some(p.clone()),
                Err(_) => None,
            })
            .collect();
        let present = failed_files(i);
        for rel in &present {
            if !only.is_empty() && !wanted.contains(rel) {
                continue;
            }
            done.push(retry_one(i, rel));
        }
        if inbox.is_some() || settings.inboxes.len() == 1 {
            for rel in wanted.iter().filter(|w| !present.contains(w)) {
                done.push(Retried::Skipped {
                    inbox: i.name.clone(),
                    rel: rel.clone(),
                    why: format!("not in {}", i.failed_dir.display()),
                });
            }
        }
    }
    done
}

fn retry_one(i: &InboxSettings, rel: &Path) -> Retried {
    let skipped = |why: String| Retried::Skipped {
        inbox: i.name.clone(),
        rel: rel.to_path_buf(),
        why,
    };
    let from = i.failed_dir.join(rel);
    let to = i.path.join(rel);
    if std::fs::symlink_metadata(&to).is_ok() {
        return skipped(format!("{} exists already", to.display()));
    }
    if let Some(parent) = to.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        return skipped(format!("cannot create {}: {e}", parent.display()));
    }
    match std::fs::rename(&from, &to) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            return skipped(format!(
                "{} is on another file system than the inbox; move it by hand",
                i.failed_dir.display()
            ));
        }
        Err(e) => return skipped(format!("cannot move it: {e}")),
    }
    // The reason belongs to the failed attempt; a new failure writes a new one.
    let _ = std::fs::remove_file(reason_path(&i.failed_dir, rel));
    Retried::Moved {
        inbox: i.name.clone(),
        rel: rel.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_files_are_told_apart_from_failed_files() {
        assert!(is_reason_file(Path::new("a/scan.pdf.reason.txt")));
        assert!(is_reason_file(Path::new("scan.pdf.reason (2).txt")));
        assert!(!is_reason_file(Path::new("scan.pdf")));
        assert!(!is_reason_file(Path::new("my.reason (draft).txt")));
        assert!(!is_reason_file(Path::new("notes.txt")));
    }
}
