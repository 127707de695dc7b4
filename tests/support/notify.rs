//! A stand-in for systemd's notify socket (`NOTIFY_SOCKET`): a unix datagram socket the test
//! binds, collecting every message the daemon sends (READY=1, WATCHDOG=1, ...).

use std::path::Path;
use std::sync::{Arc, Mutex};

/// Messages the daemon sends to systemd's notify socket, with when they came.
pub fn notify_socket(path: &Path) -> Arc<Mutex<Vec<(std::time::Instant, String)>>> {
    let sock = std::os::unix::net::UnixDatagram::bind(path).expect("bind notify socket");
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            sink.lock().unwrap().push((std::time::Instant::now(), text));
        }
    });
    got
}
