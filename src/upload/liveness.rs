//! Liveness of S3 requests: a request that makes no progress for `s3.stall_timeout` (no byte
//! of its body taken by the connection, no answer, no byte of the answer) is given up as a
//! network failure, because the server or the path to it hangs. A slow request that keeps
//! moving is never cut off, however long it takes.
//!
//! Why not the SDK's own limits: `read_timeout` and the attempt timeouts run from the start of
//! the call, body upload included, so they would cut a large part on a slow link; the SDK's
//! stalled-stream protection watches the body only, not the wait for the answer once the body
//! is sent, so a hung server that took a small file's body is waited for forever.
//!
//! How: [`Liveness`], an interceptor installed on the client, stamps the time when an attempt
//! starts and when an answer arrives, and wraps the request and response bodies in a body that
//! stamps the time of every chunk that passes. [`watch`] runs a call and gives up when the last
//! stamp is older than the limit. The stamps go to the call's [`Progress`] through a task-local,
//! so a call not run under [`watch`] is left alone.
//!
//! One blind spot remains: the last bytes of a body wait in the kernel's socket buffer after the
//! connection has taken them. On a link so slow that draining that buffer takes longer than the
//! limit, raise `s3.stall_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_sdk_s3::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
    BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::SdkBody;
use bytes::Bytes;
use tokio::time::Instant;

use super::s3;

tokio::task_local! {
    static PROGRESS: Arc<Progress>;
}

/// When a call last showed a sign of life.
#[derive(Debug)]
pub struct Progress {
    last: Mutex<Instant>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            last: Mutex::new(Instant::now()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        // A poisoned lock only means a panic elsewhere; an Instant is always whole.
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tick(&self) {
        *self.lock() = Instant::now();
        crate::run::sign_of_life();
    }

    fn last(&self) -> Instant {
        *self.lock()
    }
}

/// The call made no progress for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled(pub Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no progress and no answer from S3 for {} (s3.stall_timeout)",
            humantime::format_duration(self.0)
        )
    }
}

/// Runs `call` (an S3 request future) and gives it up, dropping it and with it its connection,
/// once it has made no progress for `limit`.
pub async fn watch<F: Future>(limit: Duration, call: F) -> Result<F::Output, Stalled> {
    let progress = Arc::new(Progress::new());
    let call = PROGRESS.scope(progress.clone(), call);
    tokio::pin!(call);
    loop {
        let deadline = progress.last() + limit;
        tokio::select! {
            out = &mut call => return Ok(out),
            _ = tokio::time::sleep_until(deadline) => {
                // Progress may have come since the deadline was set: then wait on from there.
                if progress.last() + limit <= Instant::now() {
                    return Err(Stalled(limit));
                }
            }
        }
    }
}

/// Runs an S3 call under [`watch`]: a call that makes no progress for `stall` is given up as
/// unreachable, like a refused connection.
pub(super) async fn watched<O, E>(
    stall: Duration,
    call: impl Future<Output = Result<O, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>>,
) -> Result<O, s3::S3Failure>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match watch(stall, call).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(s3::failure(&e)),
        Err(stalled) => Err(s3::S3Failure {
            disposition: s3::Disposition::Unreachable,
            message: stalled.to_string(),
            code: None,
        }),
    }
}

fn current() -> Option<Arc<Progress>> {
    PROGRESS.try_with(Arc::clone).ok()
}

/// The interceptor that feeds [`Progress`]; installed once on the client.
#[derive(Debug)]
pub struct Liveness;

impl Intercept for Liveness {
    fn name(&self) -> &'static str {
        "inboxd-liveness"
    }

    fn read_before_attempt(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The SDK's own retries (throttling, a reset connection) are retries too.
        let attempt = cfg
            .load::<aws_smithy_runtime_api::client::retries::RequestAttempts>()
            .map_or(1, |a| a.attempts());
        if attempt > 1 {
            crate::run::retried();
        }
        // A new attempt (the SDK's own retry) starts its wait afresh; the SDK's backoff before
        // it is not the server's silence.
        if let Some(p) = current() {
            p.tick();
        }
        Ok(())
    }

    fn modify_before_transmit(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(p) = current() {
            let body = ctx.request_mut().body_mut();
            *body = stamped(std::mem::replace(body, SdkBody::taken()), p);
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(p) = current() {
            // The answer's head has arrived; its body is watched chunk by chunk like a request's.
            p.tick();
            let body = ctx.response_mut().body_mut();
            *body = stamped(std::mem::replace(body, SdkBody::taken()), p);
        }
        Ok(())
    }
}

/// `body` with a stamp for every chunk that passes; the same bytes, and still retryable if it
/// was.
fn stamped(body: SdkBody, progress: Arc<Progress>) -> SdkBody {
    body.map_preserve_contents(move |inner| {
        SdkBody::from_body_1_x(Stamped {
            inner,
            progress: progress.clone(),
        })
    })
}

struct Stamped {
    inner: SdkBody,
    progress: Arc<Progress>,
}

impl http_body::Body for Stamped {
    type Data = Bytes;
    type Error = <SdkBody as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.progress.tick();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_keeps_moving_is_never_cut_and_a_silent_one_is() {
        let limit = Duration::from_secs(10);
        // Moves every 9 s for a minute: longer than the limit in all, never silent for it.
        let moving = async {
            for _ in 0..7 {
                tokio::time::sleep(Duration::from_secs(9)).await;
                if let Some(p) = current() {
                    p.tick();
                }
            }
            "done"
        };
        let t0 = Instant::now();
        assert_eq!(watch(limit, moving).await, Ok("done"));
        assert_eq!(t0.elapsed(), Duration::from_secs(63));

        let t0 = Instant::now();
        let silent = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if let Some(p) = current() {
                p.tick();
            }
            std::future::pending::<()>().await;
        };
        assert_eq!(watch(limit, silent).await, Err(Stalled(limit)));
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(13),
            "silent 10 s after its last sign"
        );
    }
}
