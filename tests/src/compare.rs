//! Comparing our answers with the runtime's: numbers by value, everything else exactly.

use serde_json::Value as Json;

/// Where two results first differ, as a readable path with both values, or `None` if equal.
pub fn diff(expected: &Json, actual: &Json) -> Option<String> {
    let mut out = Vec::new();
    walk("$", expected, actual, &mut out);
    if out.is_empty() { None } else { Some(out.join("\n")) }
}

fn short(v: &Json) -> String {
    let s = v.to_string();
    if s.len() > 300 { format!("{}…", &s[..s.floor_char_boundary(300)]) } else { s }
}

fn walk(path: &str, e: &Json, a: &Json, out: &mut Vec<String>) {
    if out.len() >= 20 {
        return;
    }
    match (e, a) {
        (Json::Number(x), Json::Number(y)) => {
            if x.as_f64() != y.as_f64() {
                out.push(format!("{path}: expected {x}, got {y}"));
            }
        }
        (Json::Array(x), Json::Array(y)) => {
            for (i, (ex, ay)) in x.iter().zip(y).enumerate() {
                walk(&format!("{path}[{i}]"), ex, ay, out);
            }
            if x.len() != y.len() {
                out.push(format!("{path}: expected {} items, got {}", x.len(), y.len()));
            }
        }
        (Json::Object(x), Json::Object(y)) => {
            for (k, ex) in x {
                match y.get(k) {
                    Some(ay) => walk(&format!("{path}.{k}"), ex, ay, out),
                    None => out.push(format!("{path}.{k}: missing (expected {})", short(ex))),
                }
            }
            for (k, ay) in y {
                if !x.contains_key(k) {
                    out.push(format!("{path}.{k}: unexpected {}", short(ay)));
                }
            }
        }
        _ => {
            if e != a {
                out.push(format!("{path}: expected {}, got {}", short(e), short(a)));
            }
        }
    }
}
