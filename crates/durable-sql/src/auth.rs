//! The authorizer: what user SQL may do, checked by SQLite at prepare time.
//!
//! It follows the runtime's rules (spec section 3.2): `_cf_` names are reserved in any letter
//! case, transaction statements, `ATTACH`/`DETACH` and TEMP objects are refused, and pragmas,
//! functions and virtual-table modules are allow-listed. Internal statements of the project
//! run in *trusted* mode, where everything but triggers on internal tables is allowed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

/// State shared between a connection's authorizer callback and the database handle.
#[derive(Debug, Default)]
pub(crate) struct AuthShared {
    /// Internal statements are being prepared or stepped.
    pub trusted: AtomicBool,
    /// The last denial was a transaction statement (the error gets the tailored message).
    pub denied_transaction: AtomicBool,
}

/// The reserved prefix, matched without regard to ASCII case.
pub const RESERVED_PREFIX: &str = "_cf_";

/// True when `name` starts with `_cf_` in any letter case.
pub fn is_reserved(name: &str) -> bool {
    name.len() >= 4 && name.as_bytes()[..4].eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes())
}

/// Installs the authorizer on `conn`.
pub(crate) fn install(
    conn: &mut rusqlite::Connection,
    shared: Arc<AuthShared>,
) -> rusqlite::Result<()> {
    conn.authorizer(Some(move |ctx: AuthContext<'_>| authorize(&shared, &ctx)))
}

fn authorize(shared: &AuthShared, ctx: &AuthContext<'_>) -> Authorization {
    if shared.trusted.load(Ordering::Relaxed) {
        return match ctx.action {
            AuthAction::CreateTrigger { .. } | AuthAction::CreateTempTrigger { .. } => {
                Authorization::Deny
            }
            _ => Authorization::Allow,
        };
    }
    if matches!(ctx.action, AuthAction::Transaction { .. } | AuthAction::Savepoint { .. }) {
        shared.denied_transaction.store(true, Ordering::Relaxed);
        return Authorization::Deny;
    }
    if user_allows(ctx) { Authorization::Allow } else { Authorization::Deny }
}

/// Which schema a statement touches.
fn schema(ctx: &AuthContext<'_>) -> Schema {
    match ctx.database_name {
        None => Schema::Unnamed,
        Some(n) if n.eq_ignore_ascii_case("main") => Schema::Main,
        Some(n) if n.eq_ignore_ascii_case("temp") => Schema::Temp,
        Some(_) => Schema::Other,
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Schema {
    Main,
    Temp,
    Other,
    Unnamed,
}

fn free(name: &str) -> bool {
    !is_reserved(name)
}

fn user_allows(ctx: &AuthContext<'_>) -> bool {
    let schema = schema(ctx);
    let main = matches!(schema, Schema::Main | Schema::Unnamed);
    match ctx.action {
        AuthAction::Select | AuthAction::Recursive => true,
        AuthAction::Read { table_name, .. } | AuthAction::Update { table_name, .. } => {
            // Eponymous tables (`pragma_table_list`, `json_each`, ...) are read like any
            // other; a pragma table's own PRAGMA is authorized when it runs.
            matches!(schema, Schema::Main | Schema::Temp | Schema::Unnamed) && free(table_name)
        }
        AuthAction::CreateTable { table_name }
        | AuthAction::DropTable { table_name }
        | AuthAction::Insert { table_name }
        | AuthAction::Delete { table_name } => main && free(table_name),
        AuthAction::CreateView { view_name } | AuthAction::DropView { view_name } => {
            main && free(view_name)
        }
        AuthAction::Reindex { index_name } => main && free(index_name),
        AuthAction::CreateIndex { index_name, table_name }
        | AuthAction::DropIndex { index_name, table_name } => {
            main && free(index_name) && free(table_name)
        }
        AuthAction::CreateTrigger { trigger_name, table_name }
        | AuthAction::DropTrigger { trigger_name, table_name } => {
            main && free(trigger_name) && free(table_name)
        }
        AuthAction::AlterTable { table_name, .. } => free(table_name),
        AuthAction::Analyze { .. } => true,
        AuthAction::CreateVtable { table_name, module_name }
        | AuthAction::DropVtable { table_name, module_name } => {
            main && free(table_name) && allowed_module(module_name)
        }
        AuthAction::Function { function_name } => allowed_function(function_name),
        AuthAction::Pragma { pragma_name, pragma_value } => {
            main && allowed_pragma(pragma_name, pragma_value)
        }
        // ATTACH, DETACH, every TEMP object, transactions and anything unknown.
        _ => false,
    }
}

fn allowed_module(module: &str) -> bool {
    ["fts5", "fts5vocab", "rtree", "rtree_i32"].iter().any(|m| m.eq_ignore_ascii_case(module))
}

/// Functions user SQL may call (spec section 3.2, corrected by the oracle's answers).
const FUNCTIONS: &[&str] = &[
    // core
    "abs",
    "changes",
    "char",
    "coalesce",
    "concat",
    "concat_ws",
    "format",
    "glob",
    "hex",
    "ifnull",
    "iif",
    "instr",
    "last_insert_rowid",
    "length",
    "like",
    "likelihood",
    "likely",
    "load_extension",
    "lower",
    "ltrim",
    "max",
    "min",
    "nullif",
    "octet_length",
    "printf",
    "quote",
    "random",
    "randomblob",
    "replace",
    "round",
    "rtrim",
    "sign",
    "soundex",
    "substr",
    "substring",
    "total_changes",
    "trim",
    "typeof",
    "unhex",
    "unicode",
    "unlikely",
    "upper",
    "zeroblob",
    // date and time
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
    "current_date",
    "current_time",
    "current_timestamp",
    // aggregates
    "avg",
    "count",
    "group_concat",
    "string_agg",
    "sum",
    "total",
    // window
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // math
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "ceil",
    "ceiling",
    "cos",
    "cosh",
    "degrees",
    "exp",
    "floor",
    "ln",
    "log",
    "log10",
    "log2",
    "mod",
    "pi",
    "pow",
    "power",
    "radians",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "trunc",
    // JSON
    "json",
    "jsonb",
    "json_array",
    "jsonb_array",
    "json_array_length",
    "json_extract",
    "jsonb_extract",
    "->",
    "->>",
    "json_insert",
    "jsonb_insert",
    "json_object",
    "jsonb_object",
    "json_patch",
    "jsonb_patch",
    "json_remove",
    "jsonb_remove",
    "json_replace",
    "jsonb_replace",
    "json_set",
    "jsonb_set",
    "json_type",
    "json_valid",
    "json_quote",
    "json_group_array",
    "jsonb_group_array",
    "json_group_object",
    "jsonb_group_object",
    "json_each",
    "json_tree",
    "jsonb_each",
    "jsonb_tree",
    // FTS5 and R*Tree
    "match",
    "highlight",
    "bm25",
    "snippet",
    "rtreecheck",
    // ALTER TABLE helpers
    "sqlite_rename_column",
    "sqlite_rename_table",
    "sqlite_rename_test",
    "sqlite_drop_column",
    "sqlite_rename_quotefix",
];

fn allowed_function(name: &str) -> bool {
    FUNCTIONS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

fn allowed_pragma(name: &str, value: Option<&str>) -> bool {
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "table_list" => true,
        "table_info" | "table_xinfo" | "foreign_key_list" | "index_info" | "index_list"
        | "index_xinfo" => value.is_some_and(free),
        "foreign_key_check" => value.is_none_or(free),
        "data_version" | "page_size" => value.is_none(),
        "case_sensitive_like"
        | "foreign_keys"
        | "defer_foreign_keys"
        | "ignore_check_constraints"
        | "legacy_alter_table"
        | "recursive_triggers"
        | "reverse_unordered_selects" => value.is_none_or(boolean_argument),
        "quick_check" => value.is_none_or(|v| {
            let v = v.trim();
            (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())) || free(v)
        }),
        "optimize" => value.is_none_or(|v| parse_i32(v.trim()).is_some()),
        _ => false,
    }
}

/// The runtime compares a boolean pragma argument by prefix, ignoring case.
fn boolean_argument(value: &str) -> bool {
    let mut v = value.trim();
    for q in ['\'', '"'] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            v = v[1..v.len() - 1].trim();
        }
    }
    ["true", "false", "yes", "no", "on", "off", "1", "0"].iter().any(|word| {
        v.len() >= word.len() && v.as_bytes()[..word.len()].eq_ignore_ascii_case(word.as_bytes())
    })
}

fn parse_i32(v: &str) -> Option<i32> {
    let (neg, digits) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let magnitude: i64 =
        if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
            i64::from_str_radix(hex, 16).ok()?
        } else {
            digits.parse().ok()?
        };
    let value = if neg { -magnitude } else { magnitude };
    i32::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_ignore_case_and_need_four_bytes() {
        for name in ["_cf_KV", "_CF_x", "_Cf_", "_cF_y"] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["_cf", "cf_x", "x_cf_", "", "_c_f"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn boolean_pragma_arguments() {
        for v in
            ["true", "FALSE", "yes", "No", "on", "off", "1", "0", "'true'", "\"yes\"", "  true  "]
        {
            assert!(boolean_argument(v), "{v}");
        }
        for v in ["abcd", "foo", "2", ""] {
            assert!(!boolean_argument(v), "{v}");
        }
    }

    #[test]
    fn optimize_takes_an_int32() {
        assert_eq!(parse_i32("-1"), Some(-1));
        assert_eq!(parse_i32("0x7fffffff"), Some(i32::MAX));
        assert_eq!(parse_i32("0x10002"), Some(0x10002));
        assert_eq!(parse_i32("0x80000000"), None);
        assert_eq!(parse_i32("abc"), None);
    }
}
