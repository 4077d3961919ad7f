//! Labels: named, movable pointers from a prompt to one of its versions, or
//! to a weighted split of several.
//!
//! `production` is the label applications fetch by default; `active` is its
//! alias. Every change of a label is kept in its history, and a label can be
//! protected so that only a key with the `release` scope may move it.

use std::fmt;
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::{FieldError, PromptName, PromptVersion, VersionNumber};
use crate::audit::Actor;

const MAX_LABEL: usize = 63;

/// A label's name: `[a-z][a-z0-9._-]{0,62}`. It starts with a letter so it
/// is never mistaken for a version number; `latest` and `active` are
/// reserved (the highest number, and the alias of `production`).
///
/// It is `Copy` (the bytes live inline), so a selector naming a label is as
/// cheap to hash and compare as one naming a number.
///
/// ```
/// use registry_domain::prompt::LabelName;
///
/// assert_eq!(LabelName::new("staging").map(|l| l.to_string()), Ok("staging".to_owned()));
/// assert!(LabelName::new("7").is_err());
/// assert!(LabelName::new("latest").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LabelName {
    len: u8,
    bytes: [u8; MAX_LABEL],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelNameError {
    #[error("a label is 1 to {MAX_LABEL} characters")]
    Length,
    #[error("a label starts with a lowercase letter")]
    BadStart,
    #[error("a label may contain only lowercase letters, digits, `.`, `_` and `-`; found {0:?}")]
    BadChar(char),
    #[error("`{0}` is reserved: it is not a label that can be set")]
    Reserved(&'static str),
}

impl LabelName {
    /// The label applications are served by default; `active` is its alias.
    pub const PRODUCTION: Self = Self::from_static("production");

    const fn from_static(s: &str) -> Self {
        let src = s.as_bytes();
        let mut bytes = [0u8; MAX_LABEL];
        let mut i = 0;
        while i < src.len() {
            bytes[i] = src[i];
            i += 1;
        }
        #[allow(clippy::cast_possible_truncation)]
        Self {
            len: src.len() as u8,
            bytes,
        }
    }

    /// # Errors
    /// Why `s` is not a label name.
    pub fn new(s: &str) -> Result<Self, LabelNameError> {
        let mut chars = s.chars();
        let first = chars.next().ok_or(LabelNameError::Length)?;
        if s.len() > MAX_LABEL {
            return Err(LabelNameError::Length);
        }
        if !first.is_ascii_lowercase() {
            return Err(LabelNameError::BadStart);
        }
        if let Some(bad) =
            chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(*c)))
        {
            return Err(LabelNameError::BadChar(bad));
        }
        for reserved in ["latest", "active"] {
            if s == reserved {
                return Err(LabelNameError::Reserved(reserved));
            }
        }
        Ok(Self::from_static(s))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// Alphabetical, as the databases order label names.
impl Ord for LabelName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for LabelName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for LabelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for LabelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LabelName({:?})", self.as_str())
    }
}

/// One arm of a split: a version and its share of the traffic, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SplitArm {
    pub version: VersionNumber,
    pub weight: u8,
}

const MAX_ARMS: usize = 10;

/// A weighted split of traffic between versions: 2 to 10 distinct versions,
/// each with a whole-percent weight of at least 1, summing to 100.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Split(Vec<SplitArm>);

impl Split {
    /// # Errors
    /// Every problem, each naming its place under `field` (`split[1].weight`).
    pub fn new(arms: Vec<(i64, i64)>, field: &str) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if !(2..=MAX_ARMS).contains(&arms.len()) {
            errors.push(FieldError::new(
                field,
                format!("a split has 2 to {MAX_ARMS} arms"),
            ));
        }
        let mut kept: Vec<SplitArm> = Vec::with_capacity(arms.len());
        let mut total: i64 = 0;
        for (i, (version, weight)) in arms.into_iter().enumerate() {
            let version = match VersionNumber::new(version) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(FieldError::new(format!("{field}[{i}].version"), e.to_string()));
                    None
                }
            };
            let weight = match u8::try_from(weight) {
                Ok(w) if (1..=100).contains(&w) => Some(w),
                _ => {
                    errors.push(FieldError::new(
                        format!("{field}[{i}].weight"),
                        "a weight is a whole percentage from 1 to 100",
                    ));
                    None
                }
            };
            total = total.saturating_add(weight.map_or(0, i64::from));
            if let (Some(version), Some(weight)) = (version, weight) {
                if kept.iter().any(|a| a.version == version) {
                    errors.push(FieldError::new(
                        format!("{field}[{i}].version"),
                        format!("version {version} appears twice"),
                    ));
                }
                kept.push(SplitArm { version, weight });
            }
        }
        if errors.is_empty() && total != 100 {
            errors.push(FieldError::new(
                field,
                format!("the weights must sum to 100, not {total}"),
            ));
        }
        if errors.is_empty() {
            Ok(Self(kept))
        } else {
            Err(errors)
        }
    }

    #[must_use]
    pub fn arms(&self) -> &[SplitArm] {
        &self.0
    }

    /// The stored form: `[{"version": 7, "weight": 90}, …]`.
    #[must_use]
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|a| json!({"version": a.version.get(), "weight": a.weight}))
                .collect(),
        )
    }

    /// # Errors
    /// A stored value that is not a valid split.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let arms = value
            .as_array()
            .ok_or("a split is an array")?
            .iter()
            .map(|a| {
                let n = |k: &str| {
                    a.get(k)
                        .and_then(Value::as_i64)
                        .ok_or(format!("no {k} in an arm"))
                };
                Ok((n("version")?, n("weight")?))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Self::new(arms, "split").map_err(|e| format!("{e:?}"))
    }
}

/// Where a label points.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LabelTarget {
    Version(VersionNumber),
    Split(Split),
}

impl LabelTarget {
    /// Every version the target may serve.
    pub fn versions(&self) -> impl Iterator<Item = VersionNumber> + '_ {
        let (one, many) = match self {
            Self::Version(v) => (Some(*v), &[][..]),
            Self::Split(s) => (None, s.arms()),
        };
        one.into_iter().chain(many.iter().map(|a| a.version))
    }

    /// The single version, when the target is not a split.
    #[must_use]
    pub fn version(&self) -> Option<VersionNumber> {
        match self {
            Self::Version(v) => Some(*v),
            Self::Split(_) => None,
        }
    }

    /// `{"version": 7}` or `{"split": […]}`, as the audit log and the API show it.
    #[must_use]
    pub fn to_json(&self) -> Value {
        match self {
            Self::Version(v) => json!({"version": v.get()}),
            Self::Split(s) => json!({"split": s.to_json()}),
        }
    }
}

impl fmt::Display for LabelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version(v) => write!(f, "version {v}"),
            Self::Split(s) => {
                f.write_str("split ")?;
                for (i, a) in s.arms().iter().enumerate() {
                    let sep = if i == 0 { "" } else { "/" };
                    write!(f, "{sep}v{}:{}%", a.version, a.weight)?;
                }
                Ok(())
            }
        }
    }
}

/// A label as stored. A removed label keeps its row, without a target, so
/// that it stays protected if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub name: LabelName,
    pub target: Option<LabelTarget>,
    pub protected: bool,
    /// Counts the label's changes: its compare-and-set token (the `ETag`).
    pub revision: u32,
    pub updated_at: OffsetDateTime,
}

/// One entry of a label's history.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelChange {
    pub id: Uuid,
    pub label: LabelName,
    pub from: Option<LabelTarget>,
    pub to: Option<LabelTarget>,
    pub actor: Actor,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub at: OffsetDateTime,
    /// The breaking-change reasons overridden by this move (`allow_breaking`).
    pub overrides: Vec<String>,
}

/// What a move must find before it may happen (compare-and-set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Whatever the label points at.
    Anything,
    /// The label points at exactly this single version.
    Version(VersionNumber),
    /// The label is at this revision (its `ETag`).
    Revision(u32),
}

impl Expected {
    /// Whether `current` (the label as stored, if it exists) is what the
    /// caller expected.
    #[must_use]
    pub fn holds(self, current: Option<&Label>) -> bool {
        match self {
            Self::Anything => true,
            Self::Version(v) => {
                current
                    .and_then(|l| l.target.as_ref())
                    .and_then(LabelTarget::version)
                    == Some(v)
            }
            Self::Revision(r) => current.map_or(0, |l| l.revision) == r,
        }
    }
}

const MAX_REASON: usize = 1_000;

/// Why a label changed, as a person wrote it: at most 1,000 characters.
///
/// # Errors
/// A [`FieldError`] on `reason`.
pub fn check_reason(reason: Option<String>) -> Result<Option<String>, FieldError> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON => Err(FieldError::new(
            "reason",
            format!("must be at most {MAX_REASON} characters"),
        )),
        Some(r) if crate::text::has_nul(&r) => Err(FieldError::new("reason", crate::text::NUL_MESSAGE)),
        other => Ok(other),
    }
}

/// What a selector resolved to in storage: one version, or every arm of a
/// split label with its version. Cached as a whole, so serving a split costs
/// the same single cache lookup as serving a plain label.
#[derive(Debug, Clone)]
pub enum Resolution {
    Version(Arc<PromptVersion>),
    Split(Arc<[(u8, Arc<PromptVersion>)]>),
}

impl Resolution {
    /// Picks the version to serve. A split picks by `subject` (the same
    /// subject always gets the same arm, everywhere), or at random per call
    /// without one.
    #[must_use]
    pub fn choose(
        &self,
        prompt: &PromptName,
        label: Option<LabelName>,
        subject: Option<&str>,
    ) -> &Arc<PromptVersion> {
        match self {
            Self::Version(v) => v,
            Self::Split(arms) => {
                let point = match subject {
                    Some(s) => bucket(prompt, label, s),
                    None => random_bucket(),
                };
                let mut upto = 0u32;
                for (weight, version) in arms.iter() {
                    upto += u32::from(*weight) * (BUCKETS / 100);
                    if point < upto {
                        return version;
                    }
                }
                // Weights sum to 100, so the loop always returns; the last
                // arm covers rounding anyway.
                arms.last().map_or_else(|| unreachable_arm(arms), |(_, v)| v)
            }
        }
    }

    #[must_use]
    pub fn is_split(&self) -> bool {
        matches!(self, Self::Split(_))
    }
}

#[allow(clippy::panic)]
fn unreachable_arm(_: &[(u8, Arc<PromptVersion>)]) -> &Arc<PromptVersion> {
    panic!("a split without arms is never stored")
}

/// Points a split is divided into: a weight of 1 % is 100 of them.
const BUCKETS: u32 = 10_000;

/// Where `subject` falls in `0..10_000` for this prompt and label: the first
/// eight bytes of SHA-256 over `prompt \n label \n subject`, big-endian,
/// modulo 10,000. Stable across processes, restarts, versions of this
/// program and languages, so clients can reproduce it.
#[must_use]
pub fn bucket(prompt: &PromptName, label: Option<LabelName>, subject: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(prompt.as_str().as_bytes());
    h.update(b"\n");
    h.update(label.as_ref().map_or("", LabelName::as_str).as_bytes());
    h.update(b"\n");
    h.update(subject.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    #[allow(clippy::cast_possible_truncation)]
    let point = (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32;
    point
}

fn random_bucket() -> u32 {
    // A v4 UUID carries 122 random bits from the operating system.
    #[allow(clippy::cast_possible_truncation)]
    let point = (Uuid::new_v4().as_u128() % u128::from(BUCKETS)) as u32;
    point
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: u32) -> Arc<PromptVersion> {
        Arc::new(PromptVersion {
            id: Uuid::now_v7(),
            prompt_id: Uuid::nil(),
            prompt_name: PromptName::new("p").expect("valid"),
            version: VersionNumber::new(i64::from(n)).expect("valid"),
            template: super::super::template::Template::parse(None, &json!("x")).expect("valid"),
            variables: super::super::template::Variables::default(),
            config: serde_json::Map::new(),
            is_active: false,
            commit_message: None,
            created_at: crate::time::now_utc(),
            includes: Vec::new(),
            source: None,
        })
    }

    #[test]
    fn label_names_follow_the_rules() {
        for ok in ["production", "staging", "a", "canary-2.eu_west", &"x".repeat(63)] {
            assert_eq!(
                LabelName::new(ok).map(|l| l.as_str().to_owned()),
                Ok(ok.to_owned())
            );
        }
        assert_eq!(LabelName::new(""), Err(LabelNameError::Length));
        assert_eq!(LabelName::new(&"x".repeat(64)), Err(LabelNameError::Length));
        assert_eq!(LabelName::new("7"), Err(LabelNameError::BadStart));
        assert_eq!(LabelName::new("Prod"), Err(LabelNameError::BadStart));
        assert_eq!(LabelName::new("pro d"), Err(LabelNameError::BadChar(' ')));
        assert_eq!(LabelName::new("a/b"), Err(LabelNameError::BadChar('/')));
        assert_eq!(LabelName::new("latest"), Err(LabelNameError::Reserved("latest")));
        assert_eq!(LabelName::new("active"), Err(LabelNameError::Reserved("active")));
        assert_eq!(
            LabelName::PRODUCTION,
            LabelName::new("production").expect("valid")
        );
    }

    #[test]
    fn a_split_must_be_distinct_versions_with_weights_summing_to_100() {
        let ok = Split::new(vec![(7, 90), (8, 10)], "split").expect("valid");
        assert_eq!(ok.arms().len(), 2);
        assert_eq!(Split::from_json(&ok.to_json()), Ok(ok));
        let fields = |r: Result<Split, Vec<FieldError>>| {
            r.expect_err("invalid")
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(Split::new(vec![(7, 100)], "split")), ["split"]);
        assert_eq!(fields(Split::new(vec![(7, 50), (8, 40)], "split")), ["split"]);
        assert_eq!(
            fields(Split::new(vec![(7, 50), (7, 50)], "split")),
            ["split[1].version"]
        );
        assert_eq!(
            fields(Split::new(vec![(0, 50), (8, 0)], "split")),
            ["split[0].version", "split[1].weight"]
        );
    }

    #[test]
    fn compare_and_set_expectations() {
        let label = Label {
            name: LabelName::PRODUCTION,
            target: Some(LabelTarget::Version(VersionNumber::FIRST)),
            protected: false,
            revision: 3,
            updated_at: crate::time::now_utc(),
        };
        assert!(Expected::Anything.holds(None));
        assert!(Expected::Version(VersionNumber::FIRST).holds(Some(&label)));
        assert!(!Expected::Version(VersionNumber::new(2).expect("valid")).holds(Some(&label)));
        assert!(!Expected::Version(VersionNumber::FIRST).holds(None));
        assert!(Expected::Revision(3).holds(Some(&label)));
        assert!(!Expected::Revision(2).holds(Some(&label)));
        assert!(Expected::Revision(0).holds(None));
    }

    #[test]
    fn the_bucket_is_a_fixed_function_of_its_inputs() {
        let p = PromptName::new("greeting").expect("valid");
        // Pinned: a change here would move every subject to another arm.
        assert_eq!(
            bucket(&p, Some(LabelName::PRODUCTION), "user-123"),
            bucket(&p, Some(LabelName::PRODUCTION), "user-123")
        );
        let digest = Sha256::digest(b"greeting\nproduction\nuser-123");
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        assert_eq!(
            u64::from(bucket(&p, Some(LabelName::PRODUCTION), "user-123")),
            u64::from_be_bytes(first) % 10_000
        );
        assert_ne!(
            bucket(&p, Some(LabelName::PRODUCTION), "user-123"),
            bucket(&p, LabelName::new("staging").ok(), "user-123"),
            "labels are independent experiments"
        );
    }

    #[test]
    fn over_a_million_subjects_each_arm_gets_its_weight_within_half_a_point() {
        let p = PromptName::new("checkout/summary").expect("valid");
        for weights in [[90u8, 10, 0], [50, 30, 20]] {
            let arms: Vec<(u8, Arc<PromptVersion>)> = weights
                .iter()
                .zip(1..)
                .filter(|(w, _)| **w > 0)
                .map(|(w, n)| (*w, version(n)))
                .collect();
            let resolution = Resolution::Split(arms.clone().into());
            let mut counts = vec![0u32; arms.len()];
            let subjects = 1_000_000u32;
            for i in 0..subjects {
                let chosen = resolution.choose(&p, Some(LabelName::PRODUCTION), Some(&format!("user-{i}")));
                let arm = arms
                    .iter()
                    .position(|(_, v)| Arc::ptr_eq(v, chosen))
                    .expect("an arm");
                counts[arm] += 1;
            }
            let shares: Vec<String> = counts
                .iter()
                .map(|c| format!("{:.3}%", f64::from(*c) * 100.0 / f64::from(subjects)))
                .collect();
            eprintln!("split {weights:?} over {subjects} subjects: {shares:?}");
            for ((weight, _), count) in arms.iter().zip(&counts) {
                let share = f64::from(*count) * 100.0 / f64::from(subjects);
                assert!(
                    (share - f64::from(*weight)).abs() <= 0.5,
                    "weight {weight}% got {share:.3}% ({weights:?})"
                );
            }
        }
    }

    #[test]
    fn without_a_subject_the_choice_is_random_but_weighted() {
        let p = PromptName::new("p").expect("valid");
        let arms: Arc<[(u8, Arc<PromptVersion>)]> = vec![(50, version(1)), (50, version(2))].into();
        let resolution = Resolution::Split(Arc::clone(&arms));
        let first = (0..2_000)
            .filter(|_| Arc::ptr_eq(resolution.choose(&p, None, None), &arms[0].1))
            .count();
        assert!((800..1_200).contains(&first), "{first} of 2000");
    }
}
