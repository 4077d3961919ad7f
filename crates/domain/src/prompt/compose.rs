//! Composition: a template may include another prompt's version,
//! `{{> shared/safety@3}}` (pinned) or `{{> shared/safety@production}}` (a
//! label), in text and in chat message contents.
//!
//! Includes are resolved when a version is created: a label becomes the
//! version it points to then, the included text is expanded into the new
//! version, and the exact versions it was built from are stored with it. A
//! stored version therefore never changes meaning when a label moves, and
//! serving it stays one cache lookup.
//!
//! The rules:
//! - A text template includes text prompts, in place.
//! - In a chat template, a message whose whole content is one include of a
//!   chat prompt is replaced by that prompt's messages, in order; an include
//!   of a text prompt anywhere in a message's content is expanded in place.
//!   A chat prompt included inside other text, or into a text template, is
//!   refused: there is no faithful way to flatten messages into text.
//! - The included versions' declared variables join the new version's; a
//!   variable the new version declares itself keeps its own declaration.
//!   The same variable declared with two different types is refused, naming
//!   both places.
//! - Cycles (a prompt reaching itself through its includes) and nesting
//!   deeper than [`MAX_DEPTH`] are refused, naming the path.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use super::label::LabelName;
use super::model::{FieldError, PromptName, PromptVersion, VersionNumber, VersionSelector};
use super::template::{self, ChatMessage, Template, TemplateKind, VariableSpec, Variables};

/// How deep includes may nest: a version including one that includes
/// another … at most this many levels down.
pub const MAX_DEPTH: usize = 5;

/// The most bytes a composed template may hold.
pub const MAX_COMPOSED_BYTES: usize = 4 * 1024 * 1024;

/// What an include names: `prompt@3`, `prompt@latest` or `prompt@label`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IncludeRef {
    pub prompt: PromptName,
    pub selector: VersionSelector,
}

impl IncludeRef {
    /// # Errors
    /// Why `raw` is not `prompt@version` or `prompt@label`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let Some((prompt, selector)) = raw.rsplit_once('@') else {
            return Err(format!(
                "include `{{{{> {raw}}}}}` names no version: write `{{{{> {raw}@3}}}}` or `{{{{> {raw}@production}}}}`"
            ));
        };
        let prompt =
            PromptName::new(prompt).map_err(|e| format!("include `{{{{> {raw}}}}}`: prompt name {e}"))?;
        let selector =
            VersionSelector::parse(selector).map_err(|e| format!("include `{{{{> {raw}}}}}`: {e}"))?;
        Ok(Self { prompt, selector })
    }
}

impl fmt::Display for IncludeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.selector {
            VersionSelector::Number(n) => write!(f, "{}@{n}", self.prompt),
            VersionSelector::Latest => write!(f, "{}@latest", self.prompt),
            VersionSelector::Label(l) => write!(f, "{}@{l}", self.prompt),
        }
    }
}

/// One version a version was built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Include {
    pub prompt: PromptName,
    pub version: VersionNumber,
    /// The label the include named, resolved to `version` at creation.
    pub via_label: Option<LabelName>,
}

impl Include {
    /// `prompt@version`, as variables' origins and error messages name it.
    #[must_use]
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.prompt, self.version)
    }
}

/// A version as authored, before its includes were expanded: what a rebase
/// starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub template: Template,
    pub variables: Variables,
}

/// A composition: the expanded template, the merged variables, and the
/// versions they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    pub template: Template,
    pub variables: Variables,
    pub includes: Vec<Include>,
}

/// Every version a composition may reach: the resolution of each include
/// the template names (by its reference), and every version reachable
/// through the stored includes of those, by `(prompt, version)`.
#[derive(Debug, Default, Clone)]
pub struct Reachable {
    pub direct: HashMap<String, (Arc<PromptVersion>, Option<LabelName>)>,
    pub versions: HashMap<(PromptName, VersionNumber), Arc<PromptVersion>>,
}

/// Checks the include graph from `parent` through `direct` (the template's
/// includes) for cycles and depth.
fn check_graph(parent: &PromptName, direct: &[Include], reachable: &Reachable) -> Vec<FieldError> {
    fn walk(
        path: &mut Vec<String>,
        names: &mut Vec<PromptName>,
        include: &Include,
        reachable: &Reachable,
        errors: &mut Vec<FieldError>,
    ) {
        path.push(include.pinned());
        if names.contains(&include.prompt) {
            errors.push(FieldError::new(
                "template",
                format!("includes form a cycle: {}", path.join(" → ")),
            ));
        } else if path.len() > MAX_DEPTH + 1 {
            errors.push(FieldError::new(
                "template",
                format!(
                    "includes nest deeper than {MAX_DEPTH} levels: {}",
                    path.join(" → ")
                ),
            ));
        } else if let Some(version) = reachable.versions.get(&(include.prompt.clone(), include.version)) {
            names.push(include.prompt.clone());
            for next in &version.includes {
                walk(path, names, next, reachable, errors);
            }
            names.pop();
        }
        path.pop();
    }
    let mut errors = Vec::new();
    for include in direct {
        walk(
            &mut vec![parent.to_string()],
            &mut vec![parent.clone()],
            include,
            reachable,
            &mut errors,
        );
    }
    errors.dedup();
    errors
}

/// Expands `template`'s includes with the versions in `reachable`, merges
/// their variables into `variables`, and checks the include graph.
///
/// # Errors
/// Every problem, each naming its field: an include that was not resolved,
/// a chat prompt where only text fits, conflicting variable types, a cycle,
/// nesting too deep, a result too large.
pub fn compose(
    parent: &PromptName,
    template: &Template,
    variables: &Variables,
    reachable: &Reachable,
) -> Result<Composed, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut includes: Vec<Include> = Vec::new();
    let mut resolved = |field: &str, raw: &str, errors: &mut Vec<FieldError>| -> Option<Arc<PromptVersion>> {
        let Some((version, via_label)) = reachable.direct.get(raw) else {
            errors.push(FieldError::new(
                field,
                format!("include `{{{{> {raw}}}}}` was not resolved"),
            ));
            return None;
        };
        let include = Include {
            prompt: version.prompt_name.clone(),
            version: version.version,
            via_label: *via_label,
        };
        if !includes.contains(&include) {
            includes.push(include);
        }
        Some(Arc::clone(version))
    };
    let text_of = |field: &str, raw: &str, version: &PromptVersion, errors: &mut Vec<FieldError>| {
        version.template.text().map(str::to_owned).or_else(|| {
            errors.push(FieldError::new(
                field,
                format!(
                    "`{{{{> {raw}}}}}` is a chat prompt: include it as a whole message of a chat template, not inside text"
                ),
            ));
            None
        })
    };
    let expanded = match template.kind() {
        TemplateKind::Text => {
            let text = template.text().unwrap_or_default();
            let out = template::replace_includes(text, |raw| {
                let version = resolved("template", raw, &mut errors).ok_or(())?;
                text_of("template", raw, &version, &mut errors).ok_or(())
            });
            out.ok().map(Template::from_text)
        }
        TemplateKind::Chat => {
            let mut messages: Vec<ChatMessage> = Vec::new();
            let mut failed = false;
            for (i, message) in template.messages().unwrap_or_default().iter().enumerate() {
                let field = format!("template[{i}].content");
                // A message that is exactly one include of a chat prompt
                // becomes that prompt's messages.
                if let Some(only) = template::sole_include(&message.content)
                    && let Some((version, _)) = reachable.direct.get(only)
                    && let Some(included) = version.template.messages()
                {
                    let included = included.to_vec();
                    if resolved(&field, only, &mut errors).is_some() {
                        messages.extend(included);
                    }
                    continue;
                }
                match template::replace_includes(&message.content, |raw| {
                    let version = resolved(&field, raw, &mut errors).ok_or(())?;
                    text_of(&field, raw, &version, &mut errors).ok_or(())
                }) {
                    Ok(content) => messages.push(ChatMessage {
                        role: message.role.clone(),
                        content,
                    }),
                    Err(()) => failed = true,
                }
            }
            (!failed).then(|| Template::from_messages(messages))
        }
    };
    let merged = merge_variables(variables, &includes, reachable, &mut errors);
    errors.extend(check_graph(parent, &includes, reachable));
    if let Some(t) = &expanded {
        let size: usize = t.text().map_or_else(
            || {
                t.messages()
                    .unwrap_or_default()
                    .iter()
                    .map(|m| m.content.len())
                    .sum()
            },
            str::len,
        );
        if size > MAX_COMPOSED_BYTES {
            errors.push(FieldError::new(
                "template",
                format!("the composed template would be {size} bytes; the limit is {MAX_COMPOSED_BYTES}"),
            ));
        }
    }
    match expanded {
        Some(template) if errors.is_empty() => Ok(Composed {
            template,
            variables: merged,
            includes,
        }),
        _ => {
            if errors.is_empty() {
                errors.push(FieldError::new("template", "the includes could not be expanded"));
            }
            Err(errors)
        }
    }
}

/// The new version's own variables, joined by each include's (recursively
/// merged already, since included versions are stored composed).
fn merge_variables(
    own: &Variables,
    includes: &[Include],
    reachable: &Reachable,
    errors: &mut Vec<FieldError>,
) -> Variables {
    let mut merged: BTreeMap<String, VariableSpec> = own.as_map().clone();
    // Where each merged variable was declared, for conflict messages.
    let mut declared_by: BTreeMap<String, String> = own
        .as_map()
        .keys()
        .map(|k| (k.clone(), "this version".to_owned()))
        .collect();
    for include in includes {
        let Some(version) = reachable.versions.get(&(include.prompt.clone(), include.version)) else {
            continue;
        };
        for (name, spec) in version.variables.as_map() {
            let origin = spec.origin.clone().unwrap_or_else(|| include.pinned());
            match merged.get(name) {
                Some(existing) => {
                    if let (Some(a), Some(b)) = (existing.ty, spec.ty)
                        && a != b
                    {
                        let here = declared_by.get(name).cloned().unwrap_or_default();
                        errors.push(FieldError::new(
                            format!("variables.{name}"),
                            format!(
                                "declared as {} by {here} and as {} by include {origin}",
                                a.name(),
                                b.name()
                            ),
                        ));
                    }
                }
                None => {
                    let mut spec = spec.clone();
                    spec.origin = Some(origin.clone());
                    merged.insert(name.clone(), spec);
                    declared_by.insert(name.clone(), format!("include {origin}"));
                }
            }
        }
    }
    Variables::restore(merged)
}

#[cfg(test)]
mod tests {
    // The helpers take `json!` values, built in place.
    #![allow(clippy::needless_pass_by_value)]

    use serde_json::{Value, json};
    use uuid::Uuid;

    use super::*;

    fn name(s: &str) -> PromptName {
        PromptName::new(s).expect("valid")
    }

    fn version(
        prompt: &str,
        n: i64,
        template: Value,
        variables: Value,
        includes: Vec<Include>,
    ) -> Arc<PromptVersion> {
        Arc::new(PromptVersion {
            id: Uuid::now_v7(),
            prompt_id: Uuid::nil(),
            prompt_name: name(prompt),
            version: VersionNumber::new(n).expect("valid"),
            template: Template::parse(None, &template).expect("valid"),
            variables: Variables::new(serde_json::from_value(variables).expect("specs")).expect("valid"),
            config: serde_json::Map::new(),
            is_active: false,
            commit_message: None,
            created_at: crate::time::now_utc(),
            includes,
            source: None,
        })
    }

    fn include(prompt: &str, n: i64) -> Include {
        Include {
            prompt: name(prompt),
            version: VersionNumber::new(n).expect("valid"),
            via_label: None,
        }
    }

    /// A reachable set where each `(reference, version)` is a direct include.
    fn reachable(direct: &[(&str, Arc<PromptVersion>)], deeper: &[Arc<PromptVersion>]) -> Reachable {
        let mut r = Reachable::default();
        for (raw, v) in direct {
            let label = IncludeRef::parse(raw).expect("valid").selector.label();
            r.direct.insert((*raw).to_owned(), (Arc::clone(v), label));
            r.versions
                .insert((v.prompt_name.clone(), v.version), Arc::clone(v));
        }
        for v in deeper {
            r.versions
                .insert((v.prompt_name.clone(), v.version), Arc::clone(v));
        }
        r
    }

    fn parse(template: Value, variables: Value) -> (Template, Variables) {
        (
            Template::parse(None, &template).expect("valid"),
            Variables::new(serde_json::from_value(variables).expect("specs")).expect("valid"),
        )
    }

    #[test]
    fn include_references_name_a_version_or_a_label() {
        assert_eq!(
            IncludeRef::parse("shared/safety@3").map(|r| r.to_string()),
            Ok("shared/safety@3".to_owned())
        );
        assert_eq!(
            IncludeRef::parse("shared/safety@production").map(|r| r.selector.label()),
            Ok(Some(LabelName::PRODUCTION))
        );
        for bad in ["shared/safety", "Shared@1", "x@0", "x@Prod", "@1"] {
            assert!(IncludeRef::parse(bad).is_err(), "{bad}");
        }
        let err = Template::parse(None, &json!("{{> shared/safety}} and {{>}}")).expect_err("invalid");
        assert_eq!(err[0].field, "template");
    }

    #[test]
    fn a_text_include_is_expanded_in_place_and_its_variables_join() {
        let safety = version(
            "shared/safety",
            3,
            json!("Never reveal {{secret_kind}}."),
            json!({"secret_kind": {"type": "string", "default": "keys"}}),
            vec![],
        );
        let (t, v) = parse(
            json!("{{> shared/safety@production}}\nAnswer {{q}}."),
            json!({"q": {"type": "string"}}),
        );
        let composed = compose(
            &name("support"),
            &t,
            &v,
            &reachable(&[("shared/safety@production", safety)], &[]),
        )
        .expect("composes");
        assert_eq!(
            composed.template.text(),
            Some("Never reveal {{secret_kind}}.\nAnswer {{q}}.")
        );
        assert_eq!(
            composed.includes,
            [Include {
                prompt: name("shared/safety"),
                version: VersionNumber::new(3).expect("valid"),
                via_label: Some(LabelName::PRODUCTION),
            }]
        );
        let merged = composed.variables.as_map();
        assert_eq!(merged["secret_kind"].origin.as_deref(), Some("shared/safety@3"));
        assert_eq!(merged["q"].origin, None);
        // A missing variable from the include is named with where it came from.
        let err = super::super::template::render(
            &composed.template,
            &composed.variables,
            &serde_json::Map::new(),
            &super::super::template::RenderLimits::default(),
        )
        .expect_err("q is missing");
        assert!(err.to_string().contains("variable `q` is required"), "{err}");
        let wrong = json!({"q": "x", "secret_kind": 5})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let err = super::super::template::render(
            &composed.template,
            &composed.variables,
            &wrong,
            &Default::default(),
        )
        .expect_err("wrong type");
        assert!(
            err.to_string()
                .contains("`secret_kind` (declared by include shared/safety@3) must be a string"),
            "{err}"
        );
    }

    #[test]
    fn a_chat_include_as_a_whole_message_contributes_its_messages() {
        let preamble = version(
            "shared/preamble",
            1,
            json!([{"role": "system", "content": "Be safe."}, {"role": "system", "content": "Be brief."}]),
            json!({}),
            vec![],
        );
        let style = version(
            "shared/style",
            2,
            json!("in {{tone}} tone"),
            json!({"tone": {"default": "a calm"}}),
            vec![],
        );
        let (t, v) = parse(
            json!([
                {"role": "system", "content": "  {{> shared/preamble@1}} "},
                {"role": "user", "content": "Answer {{> shared/style@2}}: {{q}}"}
            ]),
            json!({"q": {}}),
        );
        let r = reachable(&[("shared/preamble@1", preamble), ("shared/style@2", style)], &[]);
        let composed = compose(&name("p"), &t, &v, &r).expect("composes");
        let contents: Vec<&str> = composed
            .template
            .messages()
            .expect("chat")
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(
            contents,
            ["Be safe.", "Be brief.", "Answer in {{tone}} tone: {{q}}"]
        );
        assert_eq!(composed.includes.len(), 2);
    }

    #[test]
    fn a_chat_prompt_cannot_be_flattened_into_text() {
        let chat = version(
            "c",
            1,
            json!([{"role": "system", "content": "x"}]),
            json!({}),
            vec![],
        );
        let (t, v) = parse(json!("Before {{> c@1}}"), json!({}));
        let errors =
            compose(&name("p"), &t, &v, &reachable(&[("c@1", Arc::clone(&chat))], &[])).expect_err("refused");
        assert!(errors[0].message.contains("chat prompt"), "{errors:?}");
        let (t, v) = parse(
            json!([{"role": "user", "content": "Before {{> c@1}}"}]),
            json!({}),
        );
        let errors = compose(&name("p"), &t, &v, &reachable(&[("c@1", chat)], &[])).expect_err("refused");
        assert_eq!(errors[0].field, "template[0].content");
    }

    #[test]
    fn conflicting_variable_types_name_both_places() {
        let inc = version(
            "shared/x",
            1,
            json!("{{n}}"),
            json!({"n": {"type": "number"}}),
            vec![],
        );
        let (t, v) = parse(json!("{{> shared/x@1}} {{n}}"), json!({"n": {"type": "string"}}));
        let errors = compose(
            &name("p"),
            &t,
            &v,
            &reachable(&[("shared/x@1", Arc::clone(&inc))], &[]),
        )
        .expect_err("conflict");
        assert_eq!(errors[0].field, "variables.n");
        assert_eq!(
            errors[0].message,
            "declared as string by this version and as number by include shared/x@1"
        );
        let other = version(
            "shared/y",
            4,
            json!("{{n}}"),
            json!({"n": {"type": "boolean"}}),
            vec![],
        );
        let (t, v) = parse(json!("{{> shared/x@1}} {{> shared/y@4}}"), json!({}));
        let errors = compose(
            &name("p"),
            &t,
            &v,
            &reachable(&[("shared/x@1", inc), ("shared/y@4", other)], &[]),
        )
        .expect_err("conflict");
        assert_eq!(
            errors[0].message,
            "declared as number by include shared/x@1 and as boolean by include shared/y@4"
        );
    }

    #[test]
    fn cycles_through_other_prompts_are_refused_naming_the_path() {
        // p includes a@1, which includes b@2, which includes p@1.
        let b = version("b", 2, json!("b"), json!({}), vec![include("p", 1)]);
        let a = version("a", 1, json!("a"), json!({}), vec![include("b", 2)]);
        let p1 = version("p", 1, json!("p"), json!({}), vec![]);
        let (t, v) = parse(json!("{{> a@1}}"), json!({}));
        let errors = compose(&name("p"), &t, &v, &reachable(&[("a@1", a)], &[b, p1])).expect_err("a cycle");
        assert_eq!(errors[0].message, "includes form a cycle: p → a@1 → b@2 → p@1");
        // Including an earlier version of itself is a cycle too.
        let me = version("p", 1, json!("x"), json!({}), vec![]);
        let (t, v) = parse(json!("{{> p@1}}"), json!({}));
        let errors = compose(&name("p"), &t, &v, &reachable(&[("p@1", me)], &[])).expect_err("a cycle");
        assert_eq!(errors[0].message, "includes form a cycle: p → p@1");
    }

    #[test]
    fn nesting_deeper_than_five_is_refused() {
        // l1 → l2 → … → l6: six levels below the new version.
        let mut deeper = Vec::new();
        let mut below = vec![];
        for level in (1..=6).rev() {
            let v = version(&format!("l{level}"), 1, json!("x"), json!({}), below.clone());
            below = vec![include(&format!("l{level}"), 1)];
            deeper.push(v);
        }
        let top = deeper.pop().expect("l1");
        let (t, v) = parse(json!("{{> l1@1}}"), json!({}));
        let errors = compose(
            &name("p"),
            &t,
            &v,
            &reachable(&[("l1@1", Arc::clone(&top))], &deeper),
        )
        .expect_err("too deep");
        assert!(
            errors[0]
                .message
                .starts_with("includes nest deeper than 5 levels: p → l1@1 → l2@1"),
            "{errors:?}"
        );
        // Five levels are fine.
        let five: Vec<_> = deeper
            .into_iter()
            .filter(|v| v.prompt_name.as_str() != "l6")
            .collect();
        let l5 = five
            .iter()
            .find(|v| v.prompt_name.as_str() == "l5")
            .cloned()
            .expect("l5");
        let l5_alone = version("l5", 1, json!("x"), json!({}), vec![]);
        let mut r = reachable(&[("l1@1", top)], &five);
        r.versions.insert((l5.prompt_name.clone(), l5.version), l5_alone);
        assert!(compose(&name("p"), &t, &v, &r).is_ok());
    }
}
