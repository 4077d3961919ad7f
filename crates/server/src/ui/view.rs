//! What the console's templates show: one struct per page, built by the
//! handlers from domain values, and the small formatting rules they share.

use askama::Template;
use time::OffsetDateTime;

use super::assets::AssetUrls;

/// Percent-encodes a path segment or query value (`/` included, so a
/// prompt named `support/triage` stays one segment).
#[must_use]
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A time as the console shows it: UTC, to the second.
#[must_use]
pub fn when(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// What every signed-in page shows around its content.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub who: String,
    pub csrf: String,
    pub is_admin: bool,
    pub assets: &'static AssetUrls,
}

#[derive(Template)]
#[template(path = "ui/error.html")]
pub struct ErrorPage<'a> {
    pub status: u16,
    pub reason: &'a str,
    pub message: &'a str,
    pub assets: &'static AssetUrls,
}

#[derive(Template)]
#[template(path = "ui/sign_in.html")]
pub struct SignInPage {
    pub next: String,
    pub error: Option<String>,
    pub assets: &'static AssetUrls,
}

#[derive(Debug)]
pub struct PromptRow {
    pub name: String,
    pub href: String,
    pub tags: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub updated: String,
    pub latest: String,
}

#[derive(Debug)]
pub struct Folder {
    pub name: String,
    pub prompts: Vec<PromptRow>,
}

#[derive(Template)]
#[template(path = "ui/prompts.html")]
pub struct PromptsPage {
    pub chrome: Chrome,
    pub q: String,
    pub tag: String,
    pub folders: Vec<Folder>,
    pub count: usize,
    pub next: Option<String>,
    pub folder_links: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct VersionRow {
    pub number: u32,
    pub message: String,
    pub created: String,
    pub labels: Vec<String>,
    pub selected: bool,
}

#[derive(Debug)]
pub struct HistoryRow {
    pub at: String,
    pub who: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

#[derive(Debug)]
pub struct LabelView {
    pub name: String,
    pub target: String,
    pub protected: bool,
    pub revision: u32,
    pub updated: String,
    pub history: Vec<HistoryRow>,
    /// Whether this viewer may move it (write, and release when protected).
    pub may_move: bool,
    pub may_roll_back: bool,
    /// The versions it may be moved to, with the one it points at marked.
    pub options: Vec<(u32, bool)>,
}

#[derive(Debug)]
pub struct MessageView {
    pub role: String,
    pub content: String,
}

#[derive(Debug)]
pub struct VariableView {
    pub name: String,
    pub ty: String,
    pub required: bool,
    pub default: String,
    pub description: String,
}

#[derive(Debug)]
pub struct VersionView {
    pub number: u32,
    pub kind: &'static str,
    pub text: Option<String>,
    pub messages: Vec<MessageView>,
    pub variables: Vec<VariableView>,
    pub config: String,
    pub message: String,
    pub created: String,
    pub includes: Vec<String>,
}

/// The outcome of "try it".
#[derive(Debug, Default)]
pub struct TryResult {
    pub text: Option<String>,
    pub messages: Vec<MessageView>,
    pub errors: Vec<String>,
    pub tried: bool,
}

#[derive(Template)]
#[template(path = "ui/try_result.html")]
pub struct TryFragment<'a> {
    pub result: &'a TryResult,
}

#[derive(Template)]
#[template(path = "ui/prompt.html")]
pub struct PromptPage {
    pub chrome: Chrome,
    pub name: String,
    pub href: String,
    pub description: String,
    pub tags: Vec<String>,
    pub versions: Vec<VersionRow>,
    pub more_versions: bool,
    pub labels: Vec<LabelView>,
    pub version: Option<VersionView>,
    pub variables_json: String,
    pub result: TryResult,
    pub may_write: bool,
    pub notice: Option<String>,
    pub diff_from: u32,
    pub diff_to: u32,
}

#[derive(Debug)]
pub struct UnifiedLine {
    pub class: &'static str,
    pub text: String,
}

#[derive(Debug)]
pub struct SideRow {
    pub left: String,
    pub left_class: &'static str,
    pub right: String,
    pub right_class: &'static str,
}

#[derive(Debug)]
pub struct DiffBlock {
    pub title: String,
    pub unified: Vec<UnifiedLine>,
    pub side: Vec<SideRow>,
}

#[derive(Debug)]
pub struct VariableChangeView {
    pub name: String,
    pub change: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug)]
pub struct DiffView {
    pub from: u32,
    pub to: u32,
    pub kind_changed: Option<String>,
    pub blocks: Vec<DiffBlock>,
    pub variables: Vec<VariableChangeView>,
    pub config_patch: String,
    pub breaking: Vec<String>,
    pub identical: bool,
}

#[derive(Template)]
#[template(path = "ui/diff.html")]
pub struct DiffPage {
    pub chrome: Chrome,
    pub name: String,
    pub href: String,
    pub diff: DiffView,
    pub side_by_side: bool,
    pub numbers: Vec<u32>,
}

#[derive(Template)]
#[template(path = "ui/confirm.html")]
pub struct ConfirmPage {
    pub chrome: Chrome,
    pub name: String,
    pub href: String,
    pub label: String,
    /// `promote` or `rollback`.
    pub action: &'static str,
    pub current: String,
    pub target: u32,
    pub revision: u32,
    pub protected: bool,
    pub diff: Option<DiffView>,
    pub error: Option<String>,
    pub reason: String,
}

#[derive(Debug)]
pub struct RunRow {
    pub id: String,
    pub created: String,
    pub version: u32,
    pub label: String,
    pub status: &'static str,
    pub latency_ms: String,
    pub cost: String,
    pub model: String,
}

#[derive(Debug)]
pub struct StatsRow {
    pub series: String,
    pub bucket: String,
    pub count: u64,
    pub error_rate: String,
    pub p50: String,
    pub p95: String,
    pub p99: String,
    pub cost: String,
}

#[derive(Template)]
#[template(path = "ui/runs.html")]
pub struct RunsPage {
    pub chrome: Chrome,
    pub name: String,
    pub href: String,
    pub range: String,
    /// The ranges offered, with the one shown marked.
    pub ranges: Vec<(&'static str, bool)>,
    pub by: String,
    pub chart_json: String,
    pub stats: Vec<StatsRow>,
    pub runs: Vec<RunRow>,
    pub next: Option<String>,
    pub filter_version: String,
    pub filter_label: String,
    pub filter_status: String,
    pub filter_model: String,
}

#[derive(Template)]
#[template(path = "ui/run.html")]
pub struct RunPage {
    pub chrome: Chrome,
    pub id: String,
    pub name: String,
    pub href: String,
    pub version: u32,
    pub status: &'static str,
    pub error: String,
    pub fields: Vec<(String, String)>,
    pub input: String,
    pub output: String,
    pub metadata: String,
}

#[derive(Debug)]
pub struct KeyRow {
    pub name: String,
    pub prefix: String,
    pub scopes: String,
    pub created: String,
    pub last_used: String,
    pub revoked: String,
}

#[derive(Template)]
#[template(path = "ui/keys.html")]
pub struct KeysPage {
    pub chrome: Chrome,
    pub keys: Vec<KeyRow>,
}

#[derive(Debug)]
pub struct WebhookRow {
    pub url: String,
    pub description: String,
    pub events: String,
    pub state: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "ui/webhooks.html")]
pub struct WebhooksPage {
    pub chrome: Chrome,
    pub webhooks: Vec<WebhookRow>,
}

#[derive(Debug)]
pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub change: String,
}

#[derive(Template)]
#[template(path = "ui/audit.html")]
pub struct AuditPage {
    pub chrome: Chrome,
    pub events: Vec<AuditRow>,
    pub next: Option<String>,
    pub target: String,
}

/// A unified diff's lines, classed for display, and the same lines side by
/// side: removed lines on the left, added on the right, paired in order.
#[must_use]
pub fn diff_lines(unified: &str) -> (Vec<UnifiedLine>, Vec<SideRow>) {
    let mut lines = Vec::new();
    let mut side = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let mut added: Vec<String> = Vec::new();
    let flush = |side: &mut Vec<SideRow>, removed: &mut Vec<String>, added: &mut Vec<String>| {
        let n = removed.len().max(added.len());
        for i in 0..n {
            let left = removed.get(i);
            let right = added.get(i);
            side.push(SideRow {
                left: left.cloned().unwrap_or_default(),
                left_class: if left.is_some() { "del" } else { "none" },
                right: right.cloned().unwrap_or_default(),
                right_class: if right.is_some() { "add" } else { "none" },
            });
        }
        removed.clear();
        added.clear();
    };
    for line in unified.lines() {
        // File headers, and "\ No newline at end of file", which is about
        // the line before it.
        if line.starts_with("---") || line.starts_with("+++") || line.starts_with('\\') {
            continue;
        }
        let (class, text) = if let Some(rest) = line.strip_prefix('+') {
            added.push(rest.to_owned());
            ("add", rest)
        } else if let Some(rest) = line.strip_prefix('-') {
            removed.push(rest.to_owned());
            ("del", rest)
        } else if line.starts_with("@@") {
            flush(&mut side, &mut removed, &mut added);
            side.push(SideRow {
                left: line.to_owned(),
                left_class: "hunk",
                right: line.to_owned(),
                right_class: "hunk",
            });
            ("hunk", line)
        } else {
            flush(&mut side, &mut removed, &mut added);
            let text = line.strip_prefix(' ').unwrap_or(line);
            side.push(SideRow {
                left: text.to_owned(),
                left_class: "ctx",
                right: text.to_owned(),
                right_class: "ctx",
            });
            ("ctx", text)
        };
        lines.push(UnifiedLine {
            class,
            text: text.to_owned(),
        });
    }
    flush(&mut side, &mut removed, &mut added);
    (lines, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_one_segment() {
        assert_eq!(encode("support/triage v2"), "support%2Ftriage%20v2");
        assert_eq!(encode("a-b_c.d~"), "a-b_c.d~");
    }

    #[test]
    fn a_unified_diff_is_paired_side_by_side() {
        let unified = "--- v1\n+++ v2\n@@ -1,3 +1,3 @@\n same\n-old one\n-old two\n\\ No newline at end of file\n+new one\n\\ No newline at end of file\n tail\n";
        let (lines, side) = diff_lines(unified);
        let classes: Vec<_> = lines.iter().map(|l| l.class).collect();
        assert_eq!(classes, ["hunk", "ctx", "del", "del", "add", "ctx"]);
        let pairs: Vec<_> = side
            .iter()
            .map(|r| (r.left.as_str(), r.left_class, r.right.as_str(), r.right_class))
            .collect();
        assert_eq!(
            pairs,
            [
                ("@@ -1,3 +1,3 @@", "hunk", "@@ -1,3 +1,3 @@", "hunk"),
                ("same", "ctx", "same", "ctx"),
                ("old one", "del", "new one", "add"),
                ("old two", "del", "", "none"),
                ("tail", "ctx", "tail", "ctx"),
            ]
        );
    }

    #[test]
    fn times_are_shown_in_utc_to_the_second() {
        let t = time::macros::datetime!(2026-03-04 05:06:07.89 +02:00);
        assert_eq!(when(t), "2026-03-04 03:06:07 UTC");
    }
}
