//! `[upload]` and `[batch]`: how files are sent (limits, retries, multipart sizes within
//! what S3 allows) and how their reports are grouped.

use std::time::Duration;

use super::Ctx;
use crate::config::raw::{RawBatch, RawUpload};
use crate::config::{
    BatchSettings, ConfigError, DEFAULT_CONCURRENCY, MIB, OnConflict, UploadSettings,
};

impl Ctx<'_> {
    pub(super) fn upload(&self, u: RawUpload) -> Result<UploadSettings, ConfigError> {
        let concurrency = u.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 {
            return Err(self.err("upload.concurrency", "must be at least 1"));
        }
        let max_attempts = u.max_attempts.unwrap_or(5);
        if max_attempts == 0 {
            return Err(self.err("upload.max_attempts", "must be at least 1"));
        }
        let retry_initial = u.retry_initial.unwrap_or(Duration::from_millis(500));
        let retry_max = u.retry_max.unwrap_or(Duration::from_secs(30));
        if retry_max < retry_initial {
            return Err(self.err(
                "upload.retry_max",
                "must not be shorter than upload.retry_initial",
            ));
        }
        let multipart_threshold = u.multipart_threshold.unwrap_or(64 * MIB);
        let part_size = u.part_size.unwrap_or(16 * MIB);
        if part_size < 5 * MIB {
            return Err(self.err(
                "upload.part_size",
                "must be at least 5 MiB (the S3 minimum part size)",
            ));
        }
        if part_size > 5 * 1024 * MIB {
            return Err(self.err(
                "upload.part_size",
                "must be at most 5 GiB (the S3 maximum part size)",
            ));
        }
        if multipart_threshold > 5 * 1024 * MIB {
            return Err(self.err(
                "upload.multipart_threshold",
                "must be at most 5 GiB (the S3 limit for a single PUT)",
            ));
        }
        if multipart_threshold < 5 * MIB {
            return Err(self.err("upload.multipart_threshold", "must be at least 5 MiB"));
        }
        Ok(UploadSettings {
            concurrency,
            max_attempts,
            retry_initial,
            retry_max,
            retry_later: u.retry_later.unwrap_or(Duration::from_secs(60)),
            unreadable_retry_for: u.unreadable_retry_for.unwrap_or(Duration::from_secs(300)),
            on_conflict: u.on_conflict.unwrap_or(OnConflict::Rename),
            multipart_threshold,
            part_size,
        })
    }

    pub(super) fn batch(&self, raw: RawBatch) -> Result<BatchSettings, ConfigError> {
        let batch = BatchSettings {
            max_files: raw.max_files.unwrap_or(20),
            max_bytes: raw.max_bytes.unwrap_or(1024 * MIB),
            window: raw.window.unwrap_or(Duration::from_millis(500)),
        };
        if batch.max_files == 0 {
            return Err(self.err("batch.max_files", "must be at least 1"));
        }
        if batch.max_bytes == 0 {
            return Err(self.err("batch.max_bytes", "must be more than 0 bytes"));
        }
        Ok(batch)
    }
}
