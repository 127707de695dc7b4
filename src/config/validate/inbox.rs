//! `[[inbox]]`: each inbox's folders, bucket, prefix and timings, unique names, and the
//! rule that no inbox sees another's files or where files go.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Ctx;
use crate::config::raw::RawInbox;
use crate::config::{
    ConfigError, DEFAULT_FS_TIMEOUT, DEFAULT_INCOMPLETE_AFTER, InboxSettings, WatchMode,
};

impl Ctx<'_> {
    pub(super) fn inboxes(&self, raw: Vec<RawInbox>) -> Result<Vec<InboxSettings>, ConfigError> {
        if raw.is_empty() {
            return Err(self.err(
                "inbox",
                "no [[inbox]] is configured; at least one is needed",
            ));
        }
        let mut inboxes: Vec<InboxSettings> = Vec::new();
        let mut names = HashSet::new();
        for (i, ri) in raw.into_iter().enumerate() {
            let inbox = self.inbox(i, ri)?;
            if !names.insert(inbox.name.clone()) {
                return Err(self.err(
                    &format!("inbox[{i}].name"),
                    &format!("inbox name {:?} is used twice", inbox.name),
                ));
            }
            inboxes.push(inbox);
        }
        Ok(inboxes)
    }

    fn inbox(&self, i: usize, mut ri: RawInbox) -> Result<InboxSettings, ConfigError> {
        let object = self.object(i, &mut ri)?;
        let key = |field: &str| format!("inbox[{i}].{field}");
        let required = |v: Option<PathBuf>, field: &str| {
            v.map(|p| self.resolve(&p))
                .ok_or_else(|| self.err(&key(field), "is missing"))
        };
        let name = ri
            .name
            .ok_or_else(|| self.err(&key("name"), "is missing"))?;
        if name.is_empty() {
            return Err(self.err(&key("name"), "must not be empty"));
        }
        let path = required(ri.path, "path")?;
        let done_dir = required(ri.done_dir, "done_dir")?;
        let failed_dir = required(ri.failed_dir, "failed_dir")?;
        let bucket = ri
            .bucket
            .ok_or_else(|| self.err(&key("bucket"), "is missing"))?;
        if bucket.is_empty() {
            return Err(self.err(&key("bucket"), "must not be empty"));
        }
        let prefix = ri.prefix.unwrap_or_default();
        if prefix.starts_with('/') {
            return Err(self.err(
                &key("prefix"),
                "must not start with '/' (S3 keys have no leading slash)",
            ));
        }
        // Without the closing '/', one inbox could write into another's key space:
        // prefix "team" and a folder "-hr" in its inbox give the key "team-hr/x".
        if !prefix.is_empty() && !prefix.ends_with('/') {
            return Err(self.err(
                &key("prefix"),
                &format!("must end with '/' (for example {:?})", format!("{prefix}/")),
            ));
        }
        let fs_timeout = ri.fs_timeout.unwrap_or(DEFAULT_FS_TIMEOUT);
        if fs_timeout.is_zero() {
            return Err(self.err(&key("fs_timeout"), "must be longer than 0s"));
        }
        let ignore = ri.ignore.unwrap_or_default();
        for pat in &ignore {
            if let Err(e) = globset::Glob::new(pat) {
                return Err(self.err(&key("ignore"), &format!("bad glob {pat:?}: {e}")));
            }
        }
        let max_file_size = ri.max_file_size;
        if max_file_size == Some(0) {
            return Err(self.err(
                &key("max_file_size"),
                "must be more than 0 bytes (leave it out for no limit)",
            ));
        }
        let settle = ri.settle.unwrap_or(Duration::from_secs(2));
        let incomplete_after = ri.incomplete_after.unwrap_or(DEFAULT_INCOMPLETE_AFTER);
        if incomplete_after <= settle {
            return Err(self.err(
                &key("incomplete_after"),
                &format!(
                    "must be longer than this inbox's settle ({}): a file is only checked once it has settled",
                    humantime::format_duration(settle)
                ),
            ));
        }
        Ok(InboxSettings {
            name,
            path,
            done_dir,
            failed_dir,
            bucket,
            prefix,
            settle,
            watch: ri.watch.unwrap_or(WatchMode::Auto),
            ignore,
            fs_timeout,
            max_file_size,
            object,
            shared: ri.shared.unwrap_or(false),
            check_format: ri.check_format.unwrap_or(true),
            incomplete_after,
        })
    }

    /// Where files go must never be watched as an inbox, or a moved file would come round
    /// again; and one inbox inside another would see every file twice.
    pub(super) fn check_nesting(
        &self,
        inboxes: &[InboxSettings],
        state_dir: &Path,
    ) -> Result<(), ConfigError> {
        for (i, a) in inboxes.iter().enumerate() {
            for (j, b) in inboxes.iter().enumerate() {
                for (field, dir) in [("done_dir", &a.done_dir), ("failed_dir", &a.failed_dir)] {
                    if dir.starts_with(&b.path) {
                        return Err(self.err(
                            &format!("inbox[{i}].{field}"),
                            &format!(
                                "{} is inside the inbox {} ({}); it must be outside every inbox",
                                dir.display(),
                                b.name,
                                b.path.display()
                            ),
                        ));
                    }
                }
                if i != j && a.path.starts_with(&b.path) {
                    return Err(self.err(
                        &format!("inbox[{i}].path"),
                        &format!(
                            "{} is inside the inbox {} ({})",
                            a.path.display(),
                            b.name,
                            b.path.display()
                        ),
                    ));
                }
            }
            if state_dir.starts_with(&a.path) {
                return Err(self.err("state_dir", "must not be inside an inbox"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::{GOOD, load_str};

    #[test]
    fn format_checks_are_on_by_default_and_incomplete_after_outlasts_settle() {
        let s = load_str(GOOD).unwrap();
        assert!(s.inboxes[0].check_format);
        assert_eq!(s.inboxes[0].incomplete_after, Duration::from_secs(3600));
        let with = |extra: &str| {
            load_str(&GOOD.replace("bucket = \"b\"", &format!("bucket = \"b\"\n{extra}")))
        };
        let s = with("check_format = false\nincomplete_after = \"10m\"").unwrap();
        assert!(!s.inboxes[0].check_format);
        assert_eq!(s.inboxes[0].incomplete_after, Duration::from_secs(600));
        let e = with("settle = \"1m\"\nincomplete_after = \"30s\"").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("c.toml, line 10: key `inbox[0].incomplete_after`: must be longer than this inbox's settle (1m)"), "{text}");
        let e = with("check_format = \"yes\"").unwrap_err();
        assert!(e.to_string().contains("inbox[0].check_format"), "{e}");
        let e = with("incomplete_after = 3600").unwrap_err();
        assert!(
            e.to_string().contains("incomplete_after = \"3600s\""),
            "{e}"
        );
    }

    #[test]
    fn a_prefix_must_end_with_a_slash() {
        let with = |p: &str| {
            load_str(&GOOD.replace("bucket = \"b\"", &format!("bucket = \"b\"\nprefix = {p:?}")))
        };
        let e = with("team").unwrap_err();
        assert!(e.to_string().contains("inbox[0].prefix"), "{e}");
        assert!(e.to_string().contains("\"team/\""), "{e}");
        assert_eq!(with("team/").unwrap().inboxes[0].prefix, "team/");
        assert_eq!(with("").unwrap().inboxes[0].prefix, "");
    }
}
