//! What a reload changed: the keys and inboxes that differ between two [`Settings`], for the
//! one line the daemon logs after SIGHUP.

use super::Settings;

impl Settings {
    /// What differs from `self` in `new`, as keys (`upload.concurrency`) and inboxes (`inbox
    /// lab added`), for the line that says what a reload changed.
    pub fn changes(&self, new: &Settings) -> Vec<String> {
        let mut out = Vec::new();
        // Each named key that differs; a section that differs in a key not named here is
        // still reported, by its name.
        macro_rules! keys {
            ($section:literal, $a:expr, $b:expr, [$($field:ident),*]) => {{
                let before = out.len();
                $(
                    if $a.$field != $b.$field {
                        out.push(format!(concat!($section, ".{}"), stringify!($field)));
                    }
                )*
                if out.len() == before && $a != $b {
                    out.push(format!("[{}]", $section));
                }
            }};
        }
        if self.state_dir != new.state_dir {
            out.push("state_dir".to_owned());
        }
        keys!(
            "s3",
            self.s3,
            new.s3,
            [endpoint, region, force_path_style, connect_timeout, ca_pem]
        );
        keys!(
            "upload",
            self.upload,
            new.upload,
            [
                concurrency,
                max_attempts,
                retry_initial,
                retry_max,
                retry_later,
                unreadable_retry_for,
                on_conflict,
                multipart_threshold,
                part_size
            ]
        );
        keys!(
            "batch",
            self.batch,
            new.batch,
            [max_files, max_bytes, window]
        );
        keys!("watch", self.watch, new.watch, [rescan, poll_interval]);
        keys!(
            "cluster",
            self.cluster,
            new.cluster,
            [host_id, claim_timeout]
        );
        if self.shutdown_grace != new.shutdown_grace {
            out.push("shutdown.grace".to_owned());
        }
        if self.ledger_keep != new.ledger_keep {
            out.push("ledger.keep".to_owned());
        }
        keys!("log", self.log, new.log, [format, dir, keep, level]);
        for inbox in &new.inboxes {
            match self.inboxes.iter().find(|i| i.name == inbox.name) {
                None => out.push(format!("inbox {} added", inbox.name)),
                Some(old) if old != inbox => {
                    let mut fields = Vec::new();
                    macro_rules! fields {
                        ($($field:ident),*) => {
                            $( if old.$field != inbox.$field { fields.push(stringify!($field)); } )*
                        };
                    }
                    fields!(
                        path,
                        done_dir,
                        failed_dir,
                        bucket,
                        prefix,
                        settle,
                        watch,
                        ignore,
                        fs_timeout,
                        max_file_size,
                        object,
                        shared,
                        check_format,
                        incomplete_after
                    );
                    out.push(format!("inbox {} ({})", inbox.name, fields.join(", ")));
                }
                Some(_) => {}
            }
        }
        for old in &self.inboxes {
            if !new.inboxes.iter().any(|i| i.name == old.name) {
                out.push(format!("inbox {} removed", old.name));
            }
        }
        out.iter_mut()
            .for_each(|c| *c = c.replace("s3.ca_pem", "s3.ca_file"));
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;
    use crate::config::tests::{GOOD, load_str};

    #[test]
    fn a_reload_says_what_changed() {
        let old = load_str(GOOD).unwrap();
        let two = GOOD.to_owned()
            + "[[inbox]]\nname = \"b\"\npath = \"in2\"\ndone_dir = \"d2\"\nfailed_dir = \"f2\"\nbucket = \"b\"\n";
        let new = load_str(&format!(
            "{}\n[upload]\nconcurrency = 4\n",
            two.replace("bucket = \"b\"\n", "bucket = \"b\"\nsettle = \"5s\"\n")
        ))
        .unwrap();
        let changes = Settings {
            file: old.file.clone(),
            ..new
        }
        .changes_from_test(&old);
        assert_eq!(
            changes,
            ["upload.concurrency", "inbox a (settle)", "inbox b added"]
        );
        assert!(old.changes(&old).is_empty());
    }

    impl Settings {
        /// `changes` seen from the new side, with the state dirs of two temp dirs made equal.
        fn changes_from_test(self, old: &Settings) -> Vec<String> {
            let mut new = self;
            new.state_dir = old.state_dir.clone();
            for (n, o) in new.inboxes.iter_mut().zip(&old.inboxes) {
                n.path = o.path.clone();
                n.done_dir = o.done_dir.clone();
                n.failed_dir = o.failed_dir.clone();
            }
            old.changes(&new)
        }
    }
}
