//! The outage gate of the S3 endpoint (the configuration has one endpoint, so there is one
//! gate): the thin async shell around [`Outage`], which makes the decisions.
//!
//! Every attempt passes the gate first ([`Gate::pass`]). A request that fails because the
//! endpoint cannot be reached (connection refused or reset, DNS, TLS, a timeout or a stall, a
//! 502/503/504 without a throttling code) reports it ([`Gate::failed`]) and waits at the gate
//! instead of spending its attempts; throttling stays a per-file backoff. One prober
//! ([`Gate::probe_while_closed`]) asks the endpoint (HeadBucket, any answer will do) while the
//! gate is closed, and the first answer releases every waiting file at once.
//!
//! Waiting files hold only the upload tasks already admitted (the upload stage bounds them);
//! files not admitted yet wait upstream and in the inbox. Shutdown interrupts the wait (the
//! file stays in the inbox). In `once` mode a file waits at most `once_limit` from the start
//! of the outage, and is then left in the inbox for the next run.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outage::{AfterFailure, Outage, Say, Tuning};
use super::s3::{self, Disposition};
use crate::config::S3Settings;

pub struct Gate {
    core: Mutex<Outage>,
    /// `true` while the gate is open; changed only with `core` locked.
    open: watch::Sender<bool>,
    /// Named in the log lines.
    endpoint: String,
    /// `once` mode: how long a file waits for the endpoint before it is left for the next run.
    once_limit: Option<Duration>,
}

/// Why a file did not get through the gate.
#[derive(Debug)]
pub enum Blocked {
    /// Shutdown came first.
    Interrupted,
    /// `once` mode and the endpoint has been unreachable for too long: leave the file.
    GaveUp(String),
}

/// An attempt in flight (counted among the files an outage holds up); dropped when it ends.
pub struct Attempt<'a> {
    gate: &'a Gate,
    /// When the request went out.
    pub sent: Instant,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.gate.lock().in_flight(false);
    }
}

/// A file waiting at the gate; dropped when it stops waiting, for whatever reason.
struct Waiting<'a>(&'a Gate);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting(false);
    }
}

/// The longest a probe of an unreachable endpoint waits for its answer: a HeadBucket takes
/// milliseconds on a healthy server, and a hung one must not delay the next probe long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Gate {
    /// The gate of the endpoint in `s3`, with its prober (probing `bucket`) running until
    /// `stop`.
    pub fn start(
        client: &Client,
        s3: &S3Settings,
        bucket: Option<String>,
        once_limit: Option<Duration>,
        stop: CancellationToken,
    ) -> Arc<Gate> {
        let endpoint = s3.endpoint.clone().unwrap_or_else(|| "AWS S3".into());
        let gate = Arc::new(Gate::new(endpoint, super::outage::TUNING, once_limit));
        if let Some(bucket) = bucket {
            // A probe that gets no answer within this counts as failed (a hung server).
            let timeout = s3.stall_timeout.min(PROBE_TIMEOUT);
            tokio::spawn(
                gate.clone()
                    .probe_while_closed(client.clone(), bucket, timeout, stop),
            );
        }
        gate
    }

    pub fn new(endpoint: String, tuning: Tuning, once_limit: Option<Duration>) -> Gate {
        Gate {
            core: Mutex::new(Outage::new(tuning)),
            open: watch::Sender::new(true),
            endpoint,
            once_limit,
        }
    }

    /// `true` while the gate is open (the endpoint answers), as it changes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.open.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Outage> {
        // A poisoned lock only means a panic elsewhere; every change to the state is whole.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits while the gate is closed, then lets an attempt start.
    pub async fn pass(&self, intake: &CancellationToken) -> Result<Attempt<'_>, Blocked> {
        self.wait_open(intake).await?;
        self.lock().in_flight(true);
        Ok(Attempt {
            gate: self,
            sent: Instant::now(),
        })
    }

    /// The attempt's request failed because the endpoint could not be reached. Waits for the
    /// gate if that closed it (or it was closed); then says whether the failure counts against
    /// the file's attempts.
    pub async fn failed(
        &self,
        attempt: Attempt<'_>,
        error: &str,
        intake: &CancellationToken,
    ) -> Result<bool, Blocked> {
        let sent = attempt.sent;
        drop(attempt);
        let after = {
            let mut core = self.lock();
            let after = core.failed(sent, error, Instant::now());
            if !core.is_open() {
                self.open.send_replace(false);
            }
            after
        };
        match after {
            AfterFailure::TryAgain { counted } => Ok(counted),
            AfterFailure::Wait => {
                tracing::debug!(error, "S3 endpoint not reachable; waiting for it");
                self.wait_open(intake).await?;
                Ok(self.lock().counts(sent))
            }
        }
    }

    async fn wait_open(&self, intake: &CancellationToken) -> Result<(), Blocked> {
        let mut open = self.open.subscribe();
        if *open.borrow_and_update() {
            return Ok(());
        }
        self.lock().waiting(true);
        let _waiting = Waiting(self);
        let give_up = self
            .once_limit
            .and_then(|limit| Some(self.lock().closed_since()? + limit));
        tokio::select! {
            // The sender lives in `self`: the wait ends only when the gate opens.
            _ = open.wait_for(|open| *open) => Ok(()),
            _ = intake.cancelled() => Err(Blocked::Interrupted),
            _ = crate::run::sleep_until(give_up), if give_up.is_some() => {
                let limit = self.once_limit.unwrap_or_default();
                Err(Blocked::GaveUp(format!(
                    "S3 endpoint {} unreachable for {}; left for the next run",
                    self.endpoint,
                    humantime::format_duration(limit)
                )))
            }
        }
    }

    /// The prober: while the gate is closed, asks the endpoint (HeadBucket on `bucket`, each
    /// probe given up after `timeout`) at the times [`Outage`] says, and opens the gate at the
    /// first answer. Runs until `stop`.
    pub async fn probe_while_closed(
        self: Arc<Self>,
        client: Client,
        bucket: String,
        timeout: Duration,
        stop: CancellationToken,
    ) {
        let mut open = self.open.subscribe();
        loop {
            tokio::select! {
                _ = open.wait_for(|open| !*open) => {}
                _ = stop.cancelled() => return,
            }
            loop {
                // Not in a `while let`: its temporaries (the lock) would live through the body.
                let next = self.lock().next_probe();
                let Some(at) = next else { break };
                let answer = tokio::select! {
                    a = async {
                        tokio::time::sleep_until(at).await;
                        probe(&client, &bucket, timeout).await
                    } => a,
                    _ = stop.cancelled() => return,
                };
                let said = {
                    let mut core = self.lock();
                    let said = match &answer {
                        Ok(()) => core.probe_answered(Instant::now()),
                        Err(e) => core.probe_failed(e, Instant::now()),
                    };
                    if core.is_open() {
                        self.open.send_replace(true);
                    }
                    said
                };
                if let Some(said) = said {
                    self.say(said);
                }
            }
        }
    }

    fn say(&self, said: Say) {
        let endpoint = &self.endpoint;
        match said {
            Say::Down {
                error,
                probe,
                waiting,
            } => tracing::warn!(
                endpoint,
                error,
                probe,
                waiting,
                "S3 endpoint unreachable: uploads wait for it without spending attempts, and go on the moment it answers"
            ),
            Say::StillDown {
                down_for,
                probe,
                waiting,
            } => {
                tracing::warn!(endpoint, down_for = %humantime::format_duration(round(down_for)), probe, waiting,
                "S3 endpoint still unreachable; uploads keep waiting")
            }
            Say::Back {
                lasted,
                waiting,
                probes,
            } => {
                tracing::info!(endpoint, lasted = %humantime::format_duration(round(lasted)), released = waiting, probes,
                "S3 endpoint answers again; waiting uploads go on")
            }
            Say::Blip { error } => tracing::debug!(
                endpoint,
                error,
                "a request could not reach S3, but the endpoint answered at once"
            ),
        }
    }
}

/// To the millisecond, for log lines.
fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// One probe: `Ok` when the endpoint answers at all (even 403 or 404: it is reachable, and
/// the files will meet their own errors), `Err` when it cannot be reached. Not retried by the
/// SDK: the prober has its own schedule.
async fn probe(client: &Client, bucket: &str, timeout: Duration) -> Result<(), String> {
    let call = client
        .head_bucket()
        .bucket(bucket)
        .customize()
        .config_override(
            aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled()),
        )
        .send();
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(format!(
            "no answer to HeadBucket within {}",
            humantime::format_duration(timeout)
        )),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let f = s3::failure(&e);
            if f.disposition == Disposition::Unreachable {
                Err(f.message)
            } else {
                Ok(())
            }
        }
    }
}
