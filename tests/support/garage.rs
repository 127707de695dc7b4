//! A real third-party S3 server for the compatibility suite (`tests/compat.rs`): a single-node
//! [Garage](https://crates.io/crates/garage) on 127.0.0.1, in a temporary directory, set up
//! through its own command line (layout, key, one fresh bucket per test).
//!
//! The binary is `GARAGE_BIN`, else the cache path `.ci/run` installs to
//! (`${XDG_CACHE_HOME:-$HOME/.cache}/inboxd-ci/garage-<VERSION>/bin/garage`). Without it the
//! Garage half of the suite is skipped, and [`binary`] says so once on stderr; with
//! `GARAGE_BIN` set, a missing binary is an error, never a skip.
//!
//! One server per test process is shared by all tests ([`shared_bucket`]); a test that stops and
//! starts the server gets its own ([`Garage::start`]). No server outlives the test process: each
//! is started from a thread that lives as long as it does, with `PR_SET_PDEATHSIG` = SIGKILL
//! (the kernel kills it when the test process dies, however it dies), and the shared one is also
//! killed and its directory removed by an `atexit` handler when the test binary exits normally.
//!
//! Blocking calls (the server's command line) run under `block_in_place`: call these from a
//! multi-threaded tokio runtime (`#[tokio::test(flavor = "multi_thread")]`).

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::toml_str;

/// The Garage release the suite is written and checked against (`.ci/run` installs it).
pub const VERSION: &str = "2.5.0";

/// The provider example for Garage. Its `[s3] region` is the `s3_region` every test Garage is
/// configured with, so the example and the suite cannot drift apart.
pub const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/providers/garage.toml"
);

/// Longest wait for a server to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Finding the binary
// ---------------------------------------------------------------------------------------------

/// Where `.ci/run` installs Garage: `${XDG_CACHE_HOME:-$HOME/.cache}/inboxd-ci/garage-<VERSION>`.
pub fn cache_root() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    cache.join("inboxd-ci").join(format!("garage-{VERSION}"))
}

/// The Garage binary, or `None` when none is installed: then the Garage half of the suite is
/// skipped, and the first call says so on stderr. `GARAGE_BIN` set means "required": a missing
/// binary there panics instead of skipping.
pub fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("GARAGE_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            is_executable(&bin),
            "GARAGE_BIN={} is not an executable file (unset it to skip the Garage suite)",
            bin.display()
        );
        return Some(bin);
    }
    let bin = cache_root().join("bin/garage");
    if is_executable(&bin) {
        return Some(bin);
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        // Straight to the process's stderr: libtest captures `eprintln!` inside a test and
        // shows it only for failures, and a skip must never be silent.
        let _ = writeln!(
            std::io::stderr(),
            "\ncompat suite against Garage SKIPPED: no garage binary at {}; run .ci/run once \
             (it installs Garage {VERSION} there, about 15 minutes), or set GARAGE_BIN=/path/to/garage\n",
            bin.display()
        );
    });
    None
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `[s3] region` of [`EXAMPLE`].
pub fn example_region() -> String {
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap_or_else(|e| panic!("read the Garage example {EXAMPLE}: {e}"));
    let mut in_s3 = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_s3 = line == "[s3]";
            continue;
        }
        let Some(rest) = line.strip_prefix("region") else {
            continue;
        };
        if let (true, Some(value)) = (in_s3, rest.trim_start().strip_prefix('=')) {
            return value.trim().trim_matches('"').to_owned();
        }
    }
    panic!("{EXAMPLE} has no `region` in its [s3] section");
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// The kernel sends the process SIGKILL when the thread that started it ends (the test process
/// dying ends every thread).
fn dies_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How a server process ended, set by the thread that waits for it.
#[derive(Default)]
struct Exit {
    status: Mutex<Option<String>>,
    cond: Condvar,
}

/// A running (or ended) `garage server`.
#[derive(Clone)]
struct Process {
    pid: i32,
    exit: Arc<Exit>,
}

impl Process {
    /// Starts `garage -c CONFIG server` from a thread of its own that waits for it. The kernel
    /// sends the server SIGKILL when that thread ends, and the thread only ends with the server
    /// or with the test process: no server outlives the tests.
    fn spawn(bin: &Path, config: &Path, log: &Path) -> std::io::Result<Process> {
        let log = std::fs::File::create(log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(config)
            .arg("server")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        dies_with_parent(&mut cmd);
        let exit = Arc::new(Exit::default());
        let ended = exit.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("garage-server".into())
            .spawn(move || match cmd.spawn() {
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    let status = match child.wait() {
                        Ok(s) => s.to_string(),
                        Err(e) => format!("wait failed: {e}"),
                    };
                    *ended.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                    ended.cond.notify_all();
                }
            })?;
        let pid = rx
            .recv()
            .map_err(|_| std::io::Error::other("the garage-server thread ended early"))??;
        Ok(Process {
            pid: i32::try_from(pid).expect("pid fits i32"),
            exit,
        })
    }

    /// How it ended, `None` while it runs.
    fn exited(&self) -> Option<String> {
        self.exit
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// SIGKILL (unless it already ended) and wait until it is reaped.
    fn kill(&self) {
        let mut status = self.exit.status.lock().unwrap_or_else(|p| p.into_inner());
        if status.is_none() {
            // SAFETY: plain syscall. The pid is not reaped yet (status unset), so it is ours.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while status.is_none() && Instant::now() < deadline {
            status = self
                .exit
                .cond
                .wait_timeout(status, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Servers (and their folders) that the `atexit` handler still has to take down: the shared
/// one, which lives in a static and is never dropped.
static AT_EXIT: Mutex<Vec<(Process, PathBuf)>> = Mutex::new(Vec::new());

extern "C" fn clean_up_at_exit() {
    // try_lock: never hang the exit of the test binary on a lock some dying thread holds.
    let Ok(mut live) = AT_EXIT.try_lock() else {
        return;
    };
    for (process, dir) in live.drain(..) {
        process.kill();
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn kill_at_exit(process: Process, dir: PathBuf) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a plain function; it runs once, when the process exits normally.
        unsafe {
            libc::atexit(clean_up_at_exit);
        }
    });
    AT_EXIT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((process, dir));
}

// ---------------------------------------------------------------------------------------------
// A single-node Garage
// ---------------------------------------------------------------------------------------------

/// A single-node Garage on 127.0.0.1 with a cluster layout and one access key.
pub struct Garage {
    bin: PathBuf,
    dir: tempfile::TempDir,
    config: PathBuf,
    region: String,
    s3_addr: SocketAddr,
    key_id: String,
    secret: String,
    server: Process,
    /// `garage server` runs so far (each logs to `server-<n>.log`).
    starts: usize,
    buckets: AtomicUsize,
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.server.kill();
        if std::thread::panicking() {
            self.dump_log();
        }
    }
}

impl Garage {
    /// A server of its own (for tests that stop and start it), or `None` when Garage is not
    /// installed (see [`binary`]).
    pub fn own() -> Option<Garage> {
        let bin = binary()?;
        Some(tokio::task::block_in_place(|| Garage::start(bin)))
    }

    /// Starts a server on free ports, waits until it answers, assigns the layout and creates
    /// the access key. Blocking.
    pub fn start(bin: PathBuf) -> Garage {
        let dir = tempfile::Builder::new()
            .prefix("inboxd-garage-")
            .tempdir()
            .expect("create Garage tempdir");
        let config = dir.path().join("garage.toml");
        let region = example_region();
        // Free ports are picked, released and then bound by Garage: another process may take
        // one in between. Try again with new ports rather than fail the suite.
        let mut last_error = String::new();
        for attempt in 0..3 {
            let [rpc, s3, admin] = free_ports();
            write_config(&config, dir.path(), &region, rpc, s3, admin);
            let log = dir.path().join(format!("server-{attempt}.log"));
            let s3_addr = SocketAddr::from(([127, 0, 0, 1], s3));
            let server = Process::spawn(&bin, &config, &log)
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            if let Err(e) = wait_ready(&bin, &config, s3_addr, &server, &log) {
                server.kill();
                last_error = e;
                continue;
            }
            let mut garage = Garage {
                bin,
                dir,
                config,
                region,
                s3_addr,
                key_id: String::new(),
                secret: String::new(),
                server,
                starts: attempt + 1,
                buckets: AtomicUsize::new(0),
            };
            garage.set_up_cluster();
            return garage;
        }
        panic!("Garage did not start after 3 attempts: {last_error}");
    }

    /// Node role, layout, access key: what a fresh single-node cluster needs before buckets.
    fn set_up_cluster(&mut self) {
        let node = self.cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap_or_default().to_owned();
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        self.cli(&["layout", "apply", "--version", "1"]);
        let key = self.cli(&["key", "create", "inboxd-compat"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("`garage key create` printed no {name}\n{key}"))
        };
        self.key_id = field("Key ID:");
        self.secret = field("Secret key:");
    }

    /// A new, empty bucket on which the access key may read, write and own, as a [`Backend`].
    pub fn bucket(&self) -> Backend {
        let n = self.buckets.fetch_add(1, Ordering::Relaxed);
        let name = format!("compat-{n:03}");
        tokio::task::block_in_place(|| {
            self.cli(&["bucket", "create", &name]);
            self.cli(&[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                &name,
                "--key",
                &self.key_id,
            ]);
        });
        Backend {
            server: "garage",
            endpoint: format!("http://{}", self.s3_addr),
            region: self.region.clone(),
            access_key: self.key_id.clone(),
            secret_key: self.secret.clone(),
            bucket: name,
        }
    }

    /// SIGKILL: the server is gone at once, as in a crash or a power cut of the S3 host.
    pub fn kill(&mut self) {
        tokio::task::block_in_place(|| self.server.kill());
    }

    /// Starts the server again on the same folders and ports (same node, keys, buckets and
    /// objects) and waits until it answers. The ports were freed by the kill; should the
    /// kernel still hold one, the server exits at once and is started again.
    pub fn restart(&mut self) {
        assert!(self.server.exited().is_some(), "Garage is still running");
        tokio::task::block_in_place(|| {
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                let log = self.dir.path().join(format!("server-{}.log", self.starts));
                self.starts += 1;
                self.server = Process::spawn(&self.bin, &self.config, &log)
                    .unwrap_or_else(|e| panic!("restart {}: {e}", self.bin.display()));
                match wait_ready(&self.bin, &self.config, self.s3_addr, &self.server, &log) {
                    Ok(()) => return,
                    Err(e) if Instant::now() > deadline => panic!("Garage did not restart: {e}"),
                    Err(_) => self.server.kill(),
                }
            }
        });
    }

    fn cli(&self, args: &[&str]) -> String {
        garage_cli(&self.bin, &self.config, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The log of the current server run.
    fn log_text(&self) -> String {
        let log = self
            .dir
            .path()
            .join(format!("server-{}.log", self.starts - 1));
        std::fs::read_to_string(log).unwrap_or_default()
    }

    fn dump_log(&self) {
        eprintln!("===== garage server log =====\n{}", self.log_text());
    }
}

/// Waits until `garage status` answers and the S3 port accepts connections; fails at once when
/// the server exits (a port taken, a bad config), with its log.
fn wait_ready(
    bin: &Path,
    config: &Path,
    s3_addr: SocketAddr,
    server: &Process,
    log: &Path,
) -> Result<(), String> {
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = server.exited() {
            return Err(format!("garage server exited ({status}):\n{}", log_text()));
        }
        let s3_up = TcpStream::connect_timeout(&s3_addr, Duration::from_secs(1)).is_ok();
        if s3_up && garage_cli(bin, config, &["status"]).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "garage server did not answer within {READY_TIMEOUT:?}:\n{}",
                log_text()
            ));
        }
        // Poll interval of the condition above.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `garage -c CONFIG ARGS`: its stdout, or a message with everything it printed.
fn garage_cli(bin: &Path, config: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(config)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    // The calling thread waits for it, so it ends no later than that thread.
    dies_with_parent(&mut cmd);
    let out = cmd
        .output()
        .map_err(|e| format!("run {}: {e}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "garage {args:?}: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Three loopback ports that were free a moment ago.
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().expect("local addr").port();
    [port(0), port(1), port(2)]
}

/// 32 random bytes, hex: Garage's RPC secret (and the admin token).
fn random_hex() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    hex::encode(bytes)
}

fn write_config(config: &Path, dir: &Path, region: &str, rpc: u16, s3: u16, admin: u16) {
    let path = |name: &str| toml_str(&dir.join(name).to_string_lossy());
    let text = format!(
        "metadata_dir = {meta}\n\
         data_dir = {data}\n\
         db_engine = \"sqlite\"\n\
         replication_factor = 1\n\
         rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
         rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
         rpc_secret = \"{secret}\"\n\
         \n\
         [s3_api]\n\
         s3_region = {region}\n\
         api_bind_addr = \"127.0.0.1:{s3}\"\n\
         root_domain = \".s3.garage.localhost\"\n\
         \n\
         [admin]\n\
         api_bind_addr = \"127.0.0.1:{admin}\"\n\
         admin_token = \"{token}\"\n",
        meta = path("meta"),
        data = path("data"),
        secret = random_hex(),
        region = toml_str(region),
        token = random_hex(),
    );
    std::fs::write(config, text).expect("write Garage config");
}

// ---------------------------------------------------------------------------------------------
// The shared server
// ---------------------------------------------------------------------------------------------

/// A fresh bucket on the Garage shared by every test of this process (started on first use),
/// or `None` when Garage is not installed (see [`binary`]).
pub fn shared_bucket() -> Option<Backend> {
    static SHARED: OnceLock<Garage> = OnceLock::new();
    let bin = binary()?;
    let garage = tokio::task::block_in_place(|| {
        SHARED.get_or_init(|| {
            let garage = Garage::start(bin);
            // A static is never dropped: the exit handler takes the server down.
            kill_at_exit(garage.server.clone(), garage.dir.path().to_path_buf());
            garage
        })
    });
    Some(garage.bucket())
}
