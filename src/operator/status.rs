//! `inboxd status`: asks the running daemon for its `/status` and shows it as a table (or
//! the JSON itself); without a daemon, what the folders hold.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use super::failed::{failed_files, reason_line, regular_files};
use crate::config::Settings;

/// The command: exit 0 when something could be shown (the daemon's answer, or the folders
/// without one), 1 when the daemon's answer cannot be read or `--json` has no daemon to ask.
pub fn status_command(settings: &Settings, json: bool) -> ExitCode {
    let answer = match settings.http_listen {
        Some(addr) => fetch_status(addr),
        None => Err("[http] listen is \"off\"".to_owned()),
    };
    match (answer, json) {
        (Ok(body), true) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        (Ok(body), false) => match render_status(&body) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("inboxd: the daemon's /status is not readable: {e}");
                ExitCode::FAILURE
            }
        },
        (Err(why), true) => {
            eprintln!("inboxd: {why}");
            ExitCode::FAILURE
        }
        (Err(why), false) => {
            eprintln!("inboxd: {why}");
            print!("{}", offline_status(settings));
            ExitCode::SUCCESS
        }
    }
}

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
