//! The status page: server-rendered HTML that refreshes itself, no scripts. Every text that
//! can come from an inbox (names, reasons) is escaped: anyone can name a file `<script>`.

use std::fmt::Write as _;

use super::{Minute, Status};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(s: &Status, hour: &[(u64, Minute)]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <title>inboxd status</title><style>\
         body{{font-family:sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}\
         .bad{{color:#b00020;font-weight:bold}}.ok{{color:#1b5e20;font-weight:bold}}\
         </style></head><body><h1>inboxd {}</h1>",
        esc(s.version)
    );
    let _ = write!(
        h,
        "<p id=\"health\">Pipeline: {}. S3: {}. Running since {}.</p>",
        match s.stuck_stage {
            None => "<span class=\"ok\">healthy</span>".to_owned(),
            Some(stage) => format!("<span class=\"bad\">stuck in {}</span>", esc(stage)),
        },
        if s.s3.up {
            "<span class=\"ok\">up</span>".to_owned()
        } else {
            format!(
                "<span class=\"bad\">down</span> {}",
                esc(s.s3.note.as_deref().unwrap_or(""))
            )
        },
        esc(&s.started_at)
    );

    h.push_str("<h2>Inboxes</h2><table id=\"inboxes\"><tr><th>inbox</th><th>waiting</th><th>oldest waiting</th><th>state</th></tr>");
    for i in &s.inboxes {
        let state = match (&i.paused, i.stalled) {
            (_, true) => "<span class=\"bad\">file system not answering</span>".to_owned(),
            (Some(why), _) => format!("<span class=\"bad\">paused</span>: {}", esc(why)),
            (None, false) => "ok".to_owned(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.0} s</td><td>{state}</td></tr>",
            esc(&i.name),
            i.backlog,
            i.oldest_pending_seconds
        );
    }
    h.push_str("</table>");

    h.push_str("<h2>Last hour</h2>");
    h.push_str(&chart(hour));

    h.push_str("<h2>Recent batches</h2><table id=\"batches\"><tr><th>batch</th><th>finished</th><th>files</th><th>uploaded</th><th>duplicates</th><th>failed</th><th>deferred</th><th>duration</th></tr>");
    for b in &s.batches {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td></tr>",
            b.batch,
            esc(&b.finished_at),
            b.files.len(),
            b.uploaded,
            b.duplicates,
            b.failed,
            b.deferred,
            b.duration_ms
        );
    }
    h.push_str("</table>");

    h.push_str("<h2>Recent failures</h2><table id=\"failures\"><tr><th>when</th><th>inbox</th><th>file</th><th>reason</th></tr>");
    for f in &s.recent_failures {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.at),
            esc(&f.inbox),
            esc(&f.path),
            esc(&f.reason)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// Files uploaded per minute (bars) and the mean batch duration (line) over the last hour.
fn chart(hour: &[(u64, Minute)]) -> String {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let n = hour.len().max(1) as f64;
    let max_files = hour.iter().map(|(_, m)| m.files).max().unwrap_or(0).max(1) as f64;
    let mean_ms = |m: &Minute| {
        if m.batches == 0 {
            0.0
        } else {
            m.batch_ms as f64 / m.batches as f64
        }
    };
    let max_ms = hour.iter().map(|(_, m)| mean_ms(m)).fold(1.0, f64::max);
    let total: u64 = hour.iter().map(|(_, m)| m.files).sum();
    let bytes: u64 = hour.iter().map(|(_, m)| m.bytes).sum();
    let mut svg = format!(
        "<p id=\"throughput\">{total} files ({}) uploaded in the last hour; \
         busiest minute {max_files:.0} files; longest mean batch {max_ms:.0} ms.</p>\
         <svg id=\"chart\" width=\"{W}\" height=\"{}\" viewBox=\"0 0 {W} {}\" role=\"img\" \
         aria-label=\"files uploaded per minute and mean batch duration, last hour\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#f6f6f6\"/>",
        bytesize::ByteSize(bytes),
        H + 20.0,
        H + 20.0
    );
    let bar = W / n;
    let mut line = Vec::new();
    for (i, (_, m)) in hour.iter().enumerate() {
        let x = i as f64 * bar;
        let bh = m.files as f64 / max_files * H;
        if m.files > 0 {
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#4a90d9\"/>",
                H - bh,
                (bar - 1.0).max(1.0)
            );
        }
        line.push(format!(
            "{:.1},{:.1}",
            x + bar / 2.0,
            H - mean_ms(m) / max_ms * H
        ));
    }
    let _ = write!(
        svg,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#d9534f\" stroke-width=\"2\"/>\
         <text x=\"4\" y=\"{}\" font-size=\"12\">bars: files per minute; line: mean batch duration</text></svg>",
        line.join(" "),
        H + 15.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }
}
