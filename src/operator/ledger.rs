//! `inboxd ledger`: every ledger record as one JSON line, streamed from the running daemon
//! (which holds the ledger) or, without one, read from a private copy.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Settings;
use crate::run::EXIT_REFUSED as REFUSED;

/// `inboxd ledger`: asks the running daemon (it holds the ledger); without one, reads a
/// private copy of the ledger, so that nothing in state_dir is written (see
/// [`crate::ledger::LedgerCopy`]).
pub fn ledger_command(settings: &Settings) -> ExitCode {
    use crate::ledger::{CopyError, LedgerCopy};
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let asked = match settings.http_listen {
        Some(addr) => match fetch_ledger(addr, &mut out) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(Asked::BrokeOff(why)) => {
                eprintln!("inboxd: {why}");
                return ExitCode::from(REFUSED);
            }
            Err(Asked::NoAnswer(why)) => why,
        },
        None => "[http] listen is \"off\"".to_owned(),
    };
    let copy = match LedgerCopy::open(&settings.state_dir) {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!(
                "inboxd: no ledger in {} yet: nothing has been recorded",
                settings.state_dir.display()
            );
            return ExitCode::SUCCESS;
        }
        Err(CopyError::InUse(dir)) => {
            eprintln!(
                "inboxd: a running inboxd holds the ledger in {}, and it cannot be asked: {asked}. \
                 Ask it through its operations listener ([http] listen), or stop it first",
                dir.display()
            );
            return ExitCode::from(REFUSED);
        }
        Err(e) => {
            eprintln!("inboxd: {e}");
            return ExitCode::from(REFUSED);
        }
    };
    for rec in copy.records() {
        let line = rec.and_then(|r| serde_json::to_string(&r).map_err(Into::into));
        let written = match line {
            Ok(line) => writeln!(out, "{line}"),
            Err(e) => {
                eprintln!("inboxd: {e}");
                return ExitCode::from(REFUSED);
            }
        };
        match written {
            Ok(()) => {}
            // The reader went away (`inboxd ledger | head`).
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => {
                eprintln!("inboxd: cannot write: {e}");
                return ExitCode::from(REFUSED);
            }
        }
    }
    ExitCode::SUCCESS
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
