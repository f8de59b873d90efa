//! The conformance runner: executes the real runtime's op scripts (the format of
//! `shared/oracle/README.md`) on durable-storage and compares the answers with the runtime's
//! recorded ones.
//!
//! A case is `NAME.json` (the script) with `NAME.expected.json` (the runtime's answer).
//! [`check_dir`] runs every case of a folder; [`run_script`] runs one script and answers in
//! the oracle's JSON format. Skips come only from one reviewed file (`tests/skips.json`), one
//! reason per entry: a whole case, or single ops within it.
//!
//! ```
//! let script = serde_json::json!({"class": "sql", "ops": [
//!     {"op": "put", "key": "a", "value": 1},
//!     {"op": "sql", "query": "SELECT 1 AS one", "mode": "one"}
//! ]});
//! let dir = tempfile::tempdir()?;
//! let answer = durable_conformance::run_script(&script, dir.path());
//! assert_eq!(answer["requests"][0]["results"][1]["ok"]["result"]["one"], 1.0);
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod compare;
mod json;
mod run;

use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};

pub use compare::diff;
pub use run::{Class, run_script};

/// One case: a script and the runtime's recorded answer.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file name without `.json`.
    pub name: String,
    /// The op script.
    pub script: Json,
    /// The runtime's answer.
    pub expected: Json,
}

/// Reads every `NAME.json` with a `NAME.expected.json` beside it, sorted by name.
pub fn load_cases(dir: &Path) -> Result<Vec<Case>, String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.to_string_lossy().ends_with(".expected.json")
        })
        .collect();
    names.sort();
    let read = |p: &Path| -> Result<Json, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&replace_lone_surrogates(&text))
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut cases = Vec::new();
    for script_path in names {
        let name = script_path.file_stem().unwrap().to_string_lossy().into_owned();
        let expected_path = dir.join(format!("{name}.expected.json"));
        if !expected_path.exists() {
            continue;
        }
        cases.push(Case { name, script: read(&script_path)?, expected: read(&expected_path)? });
    }
    Ok(cases)
}

/// JSON text may escape lone UTF-16 surrogates (JavaScript strings hold them; Rust strings
/// cannot): each becomes U+FFFD, and ops that depend on them are listed in the skip file.
pub fn replace_lone_surrogates(text: &str) -> String {
    let b = text.as_bytes();
    let hex4 = |i: usize| -> Option<u16> {
        let s = text.get(i..i + 4)?;
        u16::from_str_radix(s, 16).ok()
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut last = 0;
    while i + 1 < b.len() {
        if b[i] == b'\\' {
            if b[i + 1] == b'u'
                && let Some(u) = hex4(i + 2)
            {
                let is_high = (0xd800..0xdc00).contains(&u);
                let is_low = (0xdc00..0xe000).contains(&u);
                let paired = is_high
                    && b.get(i + 6) == Some(&b'\\')
                    && b.get(i + 7) == Some(&b'u')
                    && hex4(i + 8).is_some_and(|l| (0xdc00..0xe000).contains(&l));
                if paired {
                    i += 12;
                    continue;
                }
                if is_high || is_low {
                    out.push_str(&text[last..i]);
                    out.push_str("\\ufffd");
                    i += 6;
                    last = i;
                    continue;
                }
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[last..]);
    out
}

/// One entry of the skip file.
#[derive(Debug, Clone)]
pub struct Skip {
    /// The case name.
    pub case: String,
    /// Only this class (`sql` or `kv`), or every class.
    pub class: Option<String>,
    /// Only this request (index in the script's requests), or every request.
    pub request: Option<usize>,
    /// Only the op with this label, or (with `index`) this position; neither: the whole case.
    pub label: Option<String>,
    /// Only the op at this position in its request.
    pub index: Option<usize>,
    /// Only ops of this kind (the oracle's `op` name, e.g. `bookmark`).
    pub op: Option<String>,
    /// Compare a looser property instead of hiding the op: `bookmark` keeps, of each answer,
    /// only whether it is a bookmark no earlier in history than the one before it (errors
    /// still compare exactly).
    pub compare: Option<String>,
    /// Why it is skipped.
    pub reason: String,
    /// The open issue whose work will make it pass; such a skip must go once it passes.
    pub pending: Option<u64>,
}

impl Skip {
    fn whole_case(&self) -> bool {
        self.label.is_none() && self.index.is_none() && self.request.is_none() && self.op.is_none()
    }
}

/// Reads the skip file: a JSON array of skip entries.
pub fn load_skips(path: &Path) -> Result<Vec<Skip>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: Json = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let entries = doc.as_array().ok_or("the skip file must be a JSON array")?;
    entries
        .iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Json::as_str).map(str::to_owned);
            let n = |k: &str| e.get(k).and_then(Json::as_u64);
            Ok(Skip {
                case: s("case").ok_or("a skip entry needs 'case'")?,
                class: s("class"),
                request: n("request").map(|v| v as usize),
                label: s("label"),
                index: n("index").map(|v| v as usize),
                op: s("op"),
                compare: s("compare"),
                reason: s("reason").filter(|r| !r.trim().is_empty()).ok_or_else(|| {
                    format!("skip entry for {} needs a 'reason'", s("case").unwrap_or_default())
                })?,
                pending: n("pending"),
            })
        })
        .collect()
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every compared op matched.
    Pass,
    /// Something differs; the text says where.
    Fail(String),
    /// The whole case is skipped, for this reason.
    Skipped(String),
}

impl Skip {
    fn skips_everything(&self) -> bool {
        self.whole_case() && self.class.is_none()
    }
}

/// Replaces the ops `skips` name in one class's result (`{"requests": [...]}`) with a marker;
/// labels are looked up in the runtime's answer for the same class.
fn mask(result: &mut Json, skips: &[&Skip], labels: &Json) {
    let Some(requests) = result.get_mut("requests").and_then(Json::as_array_mut) else { return };
    // The last bookmark seen, for `compare: bookmark` (history order across requests).
    let mut last_bookmark: Option<String> = None;
    for (r, request) in requests.iter_mut().enumerate() {
        let Some(results) = request.get_mut("results").and_then(Json::as_array_mut) else {
            continue;
        };
        for (i, op) in results.iter_mut().enumerate() {
            let label = labels["requests"][r]["results"][i]["label"].as_str();
            let kind = labels["requests"][r]["results"][i]["op"].as_str();
            let skip = skips.iter().find(|s| {
                s.request.is_none_or(|x| x == r)
                    && s.index.is_none_or(|x| x == i)
                    && s.label.as_deref().is_none_or(|l| label == Some(l))
                    && s.op.as_deref().is_none_or(|o| kind == Some(o))
            });
            if let Some(skip) = skip {
                *op = match skip.compare.as_deref() {
                    Some("bookmark") => bookmark_shape(op, &mut last_bookmark),
                    _ => json!({"skipped": skip.reason}),
                };
            }
        }
    }
}

/// What `compare: bookmark` keeps of an op's answer: that it answered a non-empty string
/// no smaller than the previous bookmark (bookmarks sort in history order), or its error.
fn bookmark_shape(op: &Json, last: &mut Option<String>) -> Json {
    match op.get("ok").and_then(Json::as_str) {
        Some(b) if !b.is_empty() => {
            let in_order = last.as_deref().is_none_or(|prev| prev <= b);
            *last = Some(b.to_owned());
            json!({"op": op["op"], "bookmark": if in_order { "in history order" } else { "went backwards" }})
        }
        _ => op.clone(),
    }
}

/// Applies `skips` to one class's result: a class-wide entry replaces it, op entries mask ops.
fn apply_to_class(result: &mut Json, class: &str, labels: &Json, skips: &[&Skip]) {
    let mine: Vec<&Skip> =
        skips.iter().copied().filter(|s| s.class.as_deref().is_none_or(|c| c == class)).collect();
    match mine.iter().find(|s| s.whole_case()) {
        Some(whole) => *result = json!({"skipped": whole.reason}),
        None => mask(result, &mine, labels),
    }
}

/// Applies `skips` to an answer (ours or the runtime's), single-class or `byClass`.
fn apply_skips(doc: &mut Json, labels: &Json, skips: &[&Skip]) {
    match doc.get_mut("byClass").and_then(Json::as_object_mut) {
        Some(classes) => {
            for (class, result) in classes.iter_mut() {
                apply_to_class(result, class, &labels["byClass"][class], skips);
            }
        }
        None => {
            let class = labels["class"].as_str().unwrap_or("sql").to_owned();
            apply_to_class(doc, &class, labels, skips);
        }
    }
}

/// Runs the case and compares, with `skips` applied to both answers.
fn compare(case: &Case, skips: &[&Skip], work: &Path) -> Verdict {
    if let Some(whole) = skips.iter().find(|s| s.skips_everything()) {
        return Verdict::Skipped(whole.reason.clone());
    }
    // Every run starts from empty storage, even when a case is run more than once.
    let data = match tempfile::tempdir_in(work) {
        Ok(dir) => dir,
        Err(e) => return Verdict::Fail(format!("cannot make a data folder: {e}")),
    };
    let mut actual = run_script(&case.script, data.path());
    let mut expected = case.expected.clone();
    apply_skips(&mut actual, &case.expected, skips);
    apply_skips(&mut expected, &case.expected, skips);
    match diff(&expected, &actual) {
        None => Verdict::Pass,
        Some(d) => Verdict::Fail(d),
    }
}

/// Runs one case with its skips applied, using `work` for the data.
///
/// A skip entry waiting on an open issue (`pending`) must go as soon as the case passes
/// without it, so each such entry is tried away once and its case fails if that passes.
pub fn check_case(case: &Case, skips: &[Skip], work: &Path) -> Verdict {
    let mine: Vec<&Skip> = skips.iter().filter(|s| s.case == case.name).collect();
    for (n, entry) in mine.iter().enumerate() {
        let Some(issue) = entry.pending else { continue };
        let without: Vec<&Skip> =
            mine.iter().enumerate().filter(|(m, _)| *m != n).map(|(_, s)| *s).collect();
        if compare(case, &without, work) == Verdict::Pass {
            return Verdict::Fail(format!(
                "passes without the skip entry \"{}\" (pending on issue {issue}): remove it from \
                 skips.json",
                entry.reason
            ));
        }
    }
    compare(case, &mine, work)
}

/// Totals of a run.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Cases that matched.
    pub passed: usize,
    /// Cases that differ, with their diffs.
    pub failed: Vec<(String, String)>,
    /// Cases skipped whole, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Skipped ops (inside cases that ran).
    pub skipped_ops: usize,
}

impl Summary {
    /// The closing line: `N passed, N failed, N skipped`.
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed,
            self.failed.len(),
            self.skipped.len()
        )
    }
}

/// Runs every case of `dir` with `skips`.
pub fn check_dir(dir: &Path, skips: &[Skip]) -> Result<Summary, String> {
    let cases = load_cases(dir)?;
    let mut summary = Summary::default();
    for case in &cases {
        let work = tempfile::tempdir().map_err(|e| e.to_string())?;
        summary.skipped_ops +=
            skips.iter().filter(|s| s.case == case.name && !s.skips_everything()).count();
        match check_case(case, skips, work.path()) {
            Verdict::Pass => summary.passed += 1,
            Verdict::Fail(d) => summary.failed.push((case.name.clone(), d)),
            Verdict::Skipped(r) => summary.skipped.push((case.name.clone(), r)),
        }
    }
    Ok(summary)
}

/// The project's vendored copy of the public cases.
pub fn vendored_cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cases")
}

/// The project's skip file.
pub fn skip_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("skips.json")
}
