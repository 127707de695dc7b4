//! What a failed attempt leads to. Pure: the failure's class, the file's count of transient
//! failures so far and the run's settings in, the next step out; the attempts loop
//! ([`super::attempts`]) does the waiting, pausing and logging.

use super::s3::Disposition;
use crate::run::Mode;

/// The next step after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Send again after the backoff for `transient` transient failures (this one counted).
    Retry { transient: u32 },
    /// Leave the file in the inbox and try it again later: it failed transiently too often
    /// (`settings.max_attempts`), or a bucket, credential or clock problem came up in `once`
    /// mode, where nothing pauses.
    Defer,
    /// Pause the inbox: a bucket, credential or clock problem would fail every file of it
    /// the same way (daemon mode).
    Pause,
    /// It can never be uploaded as it is: failed/, with the failure as the reason.
    Fail,
}

/// The step after a failure classified as `d`, for a file that had `transient` transient
/// failures before this one, with `max_attempts` allowed in `mode`.
pub(super) fn next_step(d: Disposition, transient: u32, max_attempts: u32, mode: Mode) -> Next {
    match d {
        // Each of these may pass on its own (or is the server's word against the file's
        // current state, which the next attempt checks again): retry, but not forever.
        Disposition::Retry
        | Disposition::Unreachable
        | Disposition::AlreadyExists
        | Disposition::BadDigest
        | Disposition::UploadGone
        | Disposition::PartsMissing => {
            let transient = transient + 1;
            if transient >= max_attempts {
                Next::Defer
            } else {
                Next::Retry { transient }
            }
        }
        Disposition::FatalConfig if mode == Mode::Once => Next::Defer,
        Disposition::FatalConfig => Next::Pause,
        Disposition::Permanent => Next::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_retry_until_max_attempts_then_defer() {
        for d in [
            Disposition::Retry,
            Disposition::Unreachable,
            Disposition::AlreadyExists,
            Disposition::BadDigest,
            Disposition::UploadGone,
            Disposition::PartsMissing,
        ] {
            assert_eq!(
                next_step(d, 0, 5, Mode::Daemon),
                Next::Retry { transient: 1 }
            );
            assert_eq!(next_step(d, 3, 5, Mode::Once), Next::Retry { transient: 4 });
            assert_eq!(next_step(d, 4, 5, Mode::Daemon), Next::Defer, "{d:?}");
        }
        // One attempt allowed: the first transient failure defers.
        assert_eq!(
            next_step(Disposition::Retry, 0, 1, Mode::Daemon),
            Next::Defer
        );
    }

    #[test]
    fn configuration_problems_pause_the_daemon_and_defer_in_once() {
        assert_eq!(
            next_step(Disposition::FatalConfig, 0, 5, Mode::Daemon),
            Next::Pause
        );
        assert_eq!(
            next_step(Disposition::FatalConfig, 4, 5, Mode::Once),
            Next::Defer
        );
    }

    #[test]
    fn permanent_failures_fail_the_file_at_once() {
        assert_eq!(
            next_step(Disposition::Permanent, 0, 5, Mode::Daemon),
            Next::Fail
        );
        assert_eq!(
            next_step(Disposition::Permanent, 2, 5, Mode::Once),
            Next::Fail
        );
    }
}
