//! What changed between two versions: the template line by line (message by
//! message for chat), the variable schema, and the config as an RFC 6902
//! JSON Patch; and whether the change breaks callers.
//!
//! A change is *breaking* when code that rendered the old version correctly
//! may fail with the new one: the kind changes (text ↔ chat), a required
//! variable is added, a variable is removed (a caller that sends it gets
//! "undeclared"), retyped (to another type; widening to any type is not
//! breaking), or made required.

use std::time::Duration;

use serde_json::Value;
use similar::{Algorithm, DiffOp, TextDiff};

use super::model::{PromptVersion, VersionNumber};
use super::template::{ChatMessage, Template, TemplateKind, VariableSpec};

/// Lines of context around each change in a unified diff.
const CONTEXT: usize = 3;
/// After this long the line diff stops searching for the smallest diff and
/// approximates: a pathological pair of large templates cannot hold a request.
const DIFF_TIMEOUT: Duration = Duration::from_millis(200);

/// How one message of a chat template changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageChangeKind {
    Added,
    Removed,
    Changed,
}

impl MessageChangeKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Changed => "changed",
        }
    }
}

/// One added, removed or changed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageChange {
    pub change: MessageChangeKind,
    /// Its position in the old version (absent when added).
    pub from_index: Option<usize>,
    /// Its position in the new version (absent when removed).
    pub to_index: Option<usize>,
    pub role: String,
    /// The old role, when a changed message's role changed.
    pub from_role: Option<String>,
    /// A unified diff of its content.
    pub diff: String,
}

/// How the template changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateDiff {
    /// A unified diff of the text (or, when the kind changed, of each side
    /// written out as text).
    Text { unified: String },
    /// The messages that were added, removed or changed.
    Chat { messages: Vec<MessageChange> },
}

/// One change to one variable's declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableChange {
    pub name: String,
    /// `added`, `removed`, `type_changed`, `required_changed` or `default_changed`.
    pub change: &'static str,
    pub from: Value,
    pub to: Value,
}

/// Everything that changed from one version to another.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionDiff {
    pub from: VersionNumber,
    pub to: VersionNumber,
    pub kind_changed: Option<(TemplateKind, TemplateKind)>,
    pub template: TemplateDiff,
    pub variables: Vec<VariableChange>,
    /// RFC 6902 JSON Patch turning the old config into the new.
    pub config: Value,
    /// Why the change is breaking; empty when it is not.
    pub breaking: Vec<String>,
}

impl VersionDiff {
    #[must_use]
    pub fn is_breaking(&self) -> bool {
        !self.breaking.is_empty()
    }
}

fn unified(old: &str, new: &str, from: &str, to: &str) -> String {
    TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .timeout(DIFF_TIMEOUT)
        .diff_lines(old, new)
        .unified_diff()
        .context_radius(CONTEXT)
        .header(from, to)
        .to_string()
}

/// A chat template written out as text: each message as `[role]` and its content.
fn as_text(template: &Template) -> String {
    match template.text() {
        Some(t) => t.to_owned(),
        None => template
            .messages()
            .unwrap_or_default()
            .iter()
            .map(|m| format!("[{}]\n{}\n", m.role, m.content))
            .collect(),
    }
}

fn diff_messages(old: &[ChatMessage], new: &[ChatMessage], from: &str, to: &str) -> Vec<MessageChange> {
    let key = |m: &ChatMessage| (m.role.clone(), m.content.clone());
    let old_keys: Vec<_> = old.iter().map(key).collect();
    let new_keys: Vec<_> = new.iter().map(key).collect();
    let mut changes = Vec::new();
    let added = |i: usize| MessageChange {
        change: MessageChangeKind::Added,
        from_index: None,
        to_index: Some(i),
        role: new[i].role.clone(),
        from_role: None,
        diff: unified("", &new[i].content, from, to),
    };
    let removed = |i: usize| MessageChange {
        change: MessageChangeKind::Removed,
        from_index: Some(i),
        to_index: None,
        role: old[i].role.clone(),
        from_role: None,
        diff: unified(&old[i].content, "", from, to),
    };
    for op in similar::capture_diff_slices(Algorithm::Myers, &old_keys, &new_keys) {
        match op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete {
                old_index, old_len, ..
            } => changes.extend((old_index..old_index + old_len).map(removed)),
            DiffOp::Insert {
                new_index, new_len, ..
            } => changes.extend((new_index..new_index + new_len).map(added)),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                let paired = old_len.min(new_len);
                for k in 0..paired {
                    let (o, n) = (&old[old_index + k], &new[new_index + k]);
                    changes.push(MessageChange {
                        change: MessageChangeKind::Changed,
                        from_index: Some(old_index + k),
                        to_index: Some(new_index + k),
                        role: n.role.clone(),
                        from_role: (o.role != n.role).then(|| o.role.clone()),
                        diff: unified(&o.content, &n.content, from, to),
                    });
                }
                changes.extend((old_index + paired..old_index + old_len).map(removed));
                changes.extend((new_index + paired..new_index + new_len).map(added));
            }
        }
    }
    changes
}

fn spec_type(spec: &VariableSpec) -> Value {
    spec.ty
        .map_or(Value::Null, |t| Value::String(t.name().to_owned()))
}

fn diff_variables(
    old: &PromptVersion,
    new: &PromptVersion,
    breaking: &mut Vec<String>,
) -> Vec<VariableChange> {
    let (old, new) = (old.variables.as_map(), new.variables.as_map());
    let mut changes = Vec::new();
    let mut change = |name: &str, change: &'static str, from: Value, to: Value| {
        changes.push(VariableChange {
            name: name.to_owned(),
            change,
            from,
            to,
        });
    };
    for (name, spec) in new {
        let Some(before) = old.get(name) else {
            change(
                name,
                "added",
                Value::Null,
                serde_json::to_value(spec).unwrap_or(Value::Null),
            );
            if spec.required {
                breaking.push(format!("adds required variable `{name}`"));
            }
            continue;
        };
        if before.ty != spec.ty {
            change(name, "type_changed", spec_type(before), spec_type(spec));
        }
        // Widening to any type accepts every value the old type did.
        if before.ty != spec.ty && spec.ty.is_some() {
            breaking.push(format!(
                "changes the type of `{name}` from {} to {}",
                before.ty.map_or("any", |t| t.name()),
                spec.ty.map_or("any", |t| t.name())
            ));
        }
        if before.required != spec.required {
            change(
                name,
                "required_changed",
                before.required.into(),
                spec.required.into(),
            );
            if spec.required {
                breaking.push(format!("makes `{name}` required"));
            }
        }
        if before.default != spec.default {
            change(
                name,
                "default_changed",
                before.default.clone().unwrap_or(Value::Null),
                spec.default.clone().unwrap_or(Value::Null),
            );
        }
    }
    for (name, spec) in old {
        if !new.contains_key(name) {
            change(
                name,
                "removed",
                serde_json::to_value(spec).unwrap_or(Value::Null),
                Value::Null,
            );
            breaking.push(format!("removes variable `{name}`"));
        }
    }
    changes
}

/// What changed from `old` to `new`.
#[must_use]
pub fn diff(old: &PromptVersion, new: &PromptVersion) -> VersionDiff {
    let (from, to) = (format!("v{}", old.version), format!("v{}", new.version));
    let mut breaking = Vec::new();
    let (old_kind, new_kind) = (old.template.kind(), new.template.kind());
    let kind_changed = (old_kind != new_kind).then_some((old_kind, new_kind));
    if let Some((a, b)) = kind_changed {
        breaking.push(format!("changes the kind from {a} to {b}"));
    }
    let template = match (old.template.messages(), new.template.messages()) {
        (Some(a), Some(b)) => TemplateDiff::Chat {
            messages: diff_messages(a, b, &from, &to),
        },
        _ => TemplateDiff::Text {
            unified: unified(&as_text(&old.template), &as_text(&new.template), &from, &to),
        },
    };
    let variables = diff_variables(old, new, &mut breaking);
    let config = serde_json::to_value(json_patch::diff(
        &Value::Object(old.config.clone()),
        &Value::Object(new.config.clone()),
    ))
    .unwrap_or(Value::Array(Vec::new()));
    VersionDiff {
        from: old.version,
        to: new.version,
        kind_changed,
        template,
        variables,
        config,
        breaking,
    }
}

/// Why moving a protected label from the versions it serves now (`from`)
/// to those it is to serve (`to`) breaks callers: every breaking change of
/// every pair, without repeats, each prefixed `v7 → v8:` when either side
/// has several versions (a split). Empty when the move breaks no caller.
#[must_use]
pub fn breaking_between(from: &[PromptVersion], to: &[PromptVersion]) -> Vec<String> {
    let several = from.len() > 1 || to.len() > 1;
    let mut reasons: Vec<String> = Vec::new();
    for old in from {
        for new in to {
            if old.version == new.version {
                continue;
            }
            for reason in diff(old, new).breaking {
                let reason = if several {
                    format!("v{} → v{}: {reason}", old.version, new.version)
                } else {
                    reason
                };
                if !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    // The helpers take `json!` values, built in place.
    #![allow(clippy::needless_pass_by_value)]

    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::prompt::{PromptName, Variables};

    fn version(n: i64, template: Value, variables: Value, config: Value) -> PromptVersion {
        PromptVersion {
            id: Uuid::now_v7(),
            prompt_id: Uuid::nil(),
            prompt_name: PromptName::new("p").expect("valid"),
            version: VersionNumber::new(n).expect("valid"),
            template: Template::parse(None, &template).expect("valid"),
            variables: Variables::new(serde_json::from_value(variables).expect("specs")).expect("valid"),
            config: config.as_object().cloned().unwrap_or_default(),
            is_active: false,
            commit_message: None,
            created_at: crate::time::now_utc(),
            includes: Vec::new(),
            source: None,
        }
    }

    #[test]
    fn a_text_change_is_a_unified_diff_and_not_breaking_by_itself() {
        let a = version(
            1,
            json!("line one\nline two\nline three\n"),
            json!({}),
            json!({"model": "a"}),
        );
        let b = version(
            2,
            json!("line one\nline 2\nline three\n"),
            json!({}),
            json!({"model": "b", "temperature": 0.2}),
        );
        let d = diff(&a, &b);
        let TemplateDiff::Text { unified } = &d.template else {
            panic!("a text diff");
        };
        assert!(unified.contains("--- v1\n+++ v2\n"), "{unified}");
        assert!(unified.contains("-line two\n+line 2\n"), "{unified}");
        assert_eq!(
            d.config,
            json!([
                {"op": "replace", "path": "/model", "value": "b"},
                {"op": "add", "path": "/temperature", "value": 0.2}
            ])
        );
        assert!(!d.is_breaking(), "{:?}", d.breaking);
    }

    #[test]
    fn chat_diffs_name_added_removed_and_changed_messages() {
        let a = version(
            1,
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "{{q}}"},
                {"role": "assistant", "content": "Sure."}
            ]),
            json!({"q": {}}),
            json!({}),
        );
        let b = version(
            2,
            json!([
                {"role": "system", "content": "Be very brief."},
                {"role": "user", "content": "{{q}}"},
                {"role": "user", "content": "Answer in French."}
            ]),
            json!({"q": {}}),
            json!({}),
        );
        let TemplateDiff::Chat { messages } = diff(&a, &b).template else {
            panic!("a chat diff");
        };
        let summary: Vec<_> = messages
            .iter()
            .map(|m| (m.change.as_str(), m.from_index, m.to_index, m.from_role.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("changed", Some(0), Some(0), None),
                ("changed", Some(2), Some(2), Some("assistant".to_owned())),
            ]
        );
        assert!(
            messages[0].diff.contains("-Be brief.") && messages[0].diff.contains("+Be very brief."),
            "{}",
            messages[0].diff
        );
    }

    #[test]
    fn breaking_changes_are_named() {
        let a = version(
            1,
            json!("{{a}} {{b}} {{c}} {{d}}"),
            json!({"a": {"type": "string"}, "b": {}, "c": {"required": false}, "d": {"default": "x"}}),
            json!({}),
        );
        let b = version(
            2,
            json!("{{a}} {{c}} {{d}} {{e}} {{f}}"),
            json!({"a": {"type": "number"}, "c": {}, "d": {"default": "y"}, "e": {}, "f": {"default": 1}}),
            json!({}),
        );
        let d = diff(&a, &b);
        assert_eq!(
            d.breaking,
            [
                "changes the type of `a` from string to number",
                "makes `c` required",
                "adds required variable `e`",
                "removes variable `b`",
            ]
        );
        let changes: Vec<_> = d.variables.iter().map(|c| (c.name.as_str(), c.change)).collect();
        assert_eq!(
            changes,
            [
                ("a", "type_changed"),
                ("c", "required_changed"),
                ("d", "default_changed"),
                ("e", "added"),
                ("f", "added"),
                ("b", "removed"),
            ]
        );
        let widened = version(5, json!("{{a}}"), json!({"a": {}}), json!({}));
        let d = diff(
            &version(6, json!("{{a}}"), json!({"a": {"type": "string"}}), json!({})),
            &widened,
        );
        assert_eq!(d.variables[0].change, "type_changed");
        assert!(!d.is_breaking(), "widening to any type breaks nobody");
        let to_chat = version(
            3,
            json!([{"role": "user", "content": "hi"}]),
            json!({}),
            json!({}),
        );
        let d = diff(&version(4, json!("hi"), json!({}), json!({})), &to_chat);
        assert_eq!(d.breaking, ["changes the kind from text to chat"]);
        assert!(matches!(d.template, TemplateDiff::Text { .. }));
    }

    #[test]
    fn the_gate_compares_every_version_served_before_with_every_one_after() {
        let a = version(1, json!("{{x}}"), json!({"x": {}}), json!({}));
        let b = version(2, json!("{{x}}"), json!({"x": {}}), json!({}));
        let c = version(3, json!("{{x}} {{y}}"), json!({"x": {}, "y": {}}), json!({}));
        assert!(breaking_between(std::slice::from_ref(&a), std::slice::from_ref(&b)).is_empty());
        assert_eq!(
            breaking_between(std::slice::from_ref(&a), std::slice::from_ref(&c)),
            ["adds required variable `y`"]
        );
        // From a split: each arm is compared, and named.
        assert_eq!(
            breaking_between(&[a.clone(), c.clone()], std::slice::from_ref(&b)),
            ["v3 → v2: removes variable `y`"]
        );
        // To the same version: nothing moves.
        assert!(breaking_between(std::slice::from_ref(&c), std::slice::from_ref(&c)).is_empty());
    }

    #[test]
    fn identical_versions_have_an_empty_diff() {
        let a = version(1, json!("same"), json!({}), json!({"k": [1, 2]}));
        let b = version(2, json!("same"), json!({}), json!({"k": [1, 2]}));
        let d = diff(&a, &b);
        assert_eq!(
            d.template,
            TemplateDiff::Text {
                unified: String::new()
            }
        );
        assert!(d.variables.is_empty() && !d.is_breaking());
        assert_eq!(d.config, json!([]));
    }
}
