//! `durable kv`: the async KV API of an object (`storage.get/put/delete/list`), values as
//! JSON (see `values.rs` for the mapping to `durable_kv::Value`).

use clap::Subcommand;
use durable_storage::kv::Error as KvError;
use durable_storage::txn::Error as TxnError;
use durable_storage::{ListOptions, Storage, Value};
use serde_json::{Value as Json, json};

use crate::Env;
use crate::error::{Error, Result};
use crate::out::Out;
use crate::values::{json_to_value, parse_lenient, value_to_json};

/// A KV call.
#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// The values of one or more keys (`storage.get`); a missing single key is an error.
    Get {
        /// The object's name.
        object: String,
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Stores values (`storage.put`): KEY VALUE [KEY VALUE...], each VALUE JSON (text that
    /// is not JSON is stored as a string).
    Put {
        /// The object's name (created on first use).
        object: String,
        /// The key.
        key: String,
        /// The value.
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// More KEY VALUE pairs, stored in the same call.
        #[arg(allow_hyphen_values = true)]
        more: Vec<String>,
    },
    /// Deletes keys (`storage.delete`): prints whether the key existed, or how many did.
    Delete {
        /// The object's name.
        object: String,
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Lists entries in key order (`storage.list`).
    List {
        /// The object's name.
        object: String,
        /// Only keys that start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// The first key (inclusive).
        #[arg(long)]
        start: Option<String>,
        /// Keys after this one (exclusive).
        #[arg(long)]
        start_after: Option<String>,
        /// Keys before this one (exclusive).
        #[arg(long)]
        end: Option<String>,
        /// At most this many entries.
        #[arg(long, allow_negative_numbers = true)]
        limit: Option<i64>,
        /// Largest keys first.
        #[arg(long)]
        reverse: bool,
    },
}

impl KvCommand {
    /// The object the call is on.
    pub fn object(&self) -> &str {
        match self {
            KvCommand::Get { object, .. }
            | KvCommand::Put { object, .. }
            | KvCommand::Delete { object, .. }
            | KvCommand::List { object, .. } => object,
        }
    }
}

fn is_decode_error(e: &TxnError) -> bool {
    matches!(e, TxnError::Kv(KvError::Decode { .. } | KvError::UnknownFormat { .. }))
}

/// The value of `key` as JSON. Every format-2 value reads as a `Value`; a format-1 value
/// stored by a typed program (not a `Value`) cannot be decoded without its type: its stored
/// bytes come back as `{"$raw": "<hex>"}`.
fn get_json(storage: &Storage, key: &str) -> Result<Option<Json>> {
    match storage.get::<Value>(key).wait() {
        Ok(v) => Ok(v.as_ref().map(value_to_json)),
        Err(e) if is_decode_error(&e) => {
            let raw = storage.kv()?.get_raw(key)?;
            Ok(raw.map(|bytes| json!({ "$raw": hex::encode(&bytes) })))
        }
        Err(e) => Err(e.into()),
    }
}

fn print_entries(out: &mut Out, entries: &[(String, Json)]) -> Result<()> {
    if out.json {
        let docs: Vec<Json> =
            entries.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect();
        return out.json(&Json::Array(docs));
    }
    for (key, value) in entries {
        out.line(format!("{key}\t{}", serde_json::to_string(value)?))?;
    }
    Ok(())
}

/// Runs one KV call on `storage` and commits it.
pub fn call(out: &mut Out, storage: &Storage, command: KvCommand) -> Result<()> {
    match command {
        KvCommand::Get { keys, .. } => {
            if let [key] = keys.as_slice() {
                let Some(value) = get_json(storage, key)? else {
                    return Err(Error::msg(format!("no key {key:?}")));
                };
                if out.json {
                    return out.json(&json!({ "key": key, "value": value }));
                }
                return out.line(serde_json::to_string(&value)?);
            }
            let mut found = Vec::new();
            let mut sorted: Vec<&String> = keys.iter().collect();
            sorted.sort();
            sorted.dedup();
            for key in sorted {
                if let Some(v) = get_json(storage, key)? {
                    found.push((key.clone(), v));
                }
            }
            print_entries(out, &found)
        }
        KvCommand::Put { key, value, more, .. } => {
            if !more.len().is_multiple_of(2) {
                return Err(Error::msg(format!("key {:?} has no value", more[more.len() - 1])));
            }
            let mut entries = vec![(key, json_to_value(&parse_lenient(&value))?)];
            for pair in more.chunks(2) {
                entries.push((pair[0].clone(), json_to_value(&parse_lenient(&pair[1]))?));
            }
            let n = entries.len();
            if let [(key, value)] = entries.as_slice() {
                storage.put(key, value).wait()?;
            } else {
                let refs: Vec<(&str, Value)> =
                    entries.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                storage.put_multiple(&refs).wait()?;
            }
            storage.sync().wait()?;
            if out.json {
                return out.json(&json!({ "put": n }));
            }
            out.line(format!("put {n} key{}", if n == 1 { "" } else { "s" }))
        }
        KvCommand::Delete { keys, .. } => {
            let doc = if let [key] = keys.as_slice() {
                json!({ "deleted": storage.delete(key).wait()? })
            } else {
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                json!({ "deleted": storage.delete_multiple(&refs).wait()? })
            };
            storage.sync().wait()?;
            if out.json {
                return out.json(&doc);
            }
            out.line(doc["deleted"].to_string())
        }
        KvCommand::List { prefix, start, start_after, end, limit, reverse, .. } => {
            // Options the command line may leave out are set as fields.
            let mut options = ListOptions::new().reverse(reverse);
            (options.prefix, options.start, options.start_after) = (prefix, start, start_after);
            (options.end, options.limit) = (end, limit);
            let entries: Vec<(String, Value)> = storage.list(&options).wait().map_err(|e| {
                if is_decode_error(&e) {
                    Error::msg(format!(
                        "{e} (a value stored by a typed program: `kv get` shows its bytes)"
                    ))
                } else {
                    e.into()
                }
            })?;
            let entries: Vec<(String, Json)> =
                entries.into_iter().map(|(k, v)| (k, value_to_json(&v))).collect();
            print_entries(out, &entries)
        }
    }
}

/// Runs `durable kv ...`.
pub fn run(env: &mut Env, command: KvCommand) -> Result<()> {
    let ns = env.namespace()?;
    let storage = match &command {
        KvCommand::Put { object, .. } => ns.storage(object)?,
        other => env.existing(&ns, other.object())?,
    };
    call(&mut env.out, &storage, command)
}
