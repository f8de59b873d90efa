//! `durable shell`: an interactive prompt on one object. Each line is one turn, committed
//! when it ends: an SQL statement (or several separated by `;`), a `kv` command, or a
//! dot-command. History is kept in memory and in `.durable_history` in the data directory.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use durable_storage::Storage;

use crate::Env;
use crate::error::{Error, Result};
use crate::kv::{self, KvCommand};
use crate::sql;

/// The file in the data directory that keeps the shell's history.
pub const HISTORY_FILE: &str = ".durable_history";

/// Lines of history loaded from the file.
const HISTORY_KEEP: usize = 1000;

const HELP: &str = "\
SQL lines run as one exec each, e.g.  SELECT * FROM users WHERE id = 1
kv get KEY...                          values as JSON
kv put KEY VALUE                       VALUE is the rest of the line, JSON or text
kv delete KEY...                       whether the key existed / how many did
kv list [--prefix P] [--start S] [--start-after S] [--end E] [--limit N] [--reverse]
.history        numbered history;  !N runs entry N again, !! the last one
.help           this text
.quit / .exit   leave (so does end of input)
Quote a key or value that holds spaces with single quotes: kv get 'my key'";

/// The `kv` commands of the shell, parsed by the same definitions as `durable kv`.
#[derive(Parser, Debug)]
#[command(name = "kv", no_binary_name = true, disable_help_flag = true)]
struct KvLine {
    #[command(subcommand)]
    command: KvCommand,
}

/// Splits a line into words: whitespace separates, single quotes group (and are removed).
fn words(line: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(Error::msg("unterminated single quote")),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// The `kv` command of a shell line (the object is the shell's).
fn kv_command(object: &str, rest: &str) -> Result<KvCommand> {
    let rest = rest.trim_start();
    // `kv put KEY VALUE`: the value is the rest of the line, verbatim (JSON has spaces).
    if let Some(after) = rest.strip_prefix("put ") {
        let after = after.trim_start();
        let (key, value) = if let Some(quoted) = after.strip_prefix('\'') {
            let end = quoted.find('\'').ok_or_else(|| Error::msg("unterminated single quote"))?;
            (quoted[..end].to_owned(), quoted[end + 1..].trim())
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_owned(), after[end..].trim())
        };
        if key.is_empty() || value.is_empty() {
            return Err(Error::msg("usage: kv put KEY VALUE"));
        }
        let value = value.to_owned();
        return Ok(KvCommand::Put { object: object.into(), key, value, more: Vec::new() });
    }
    let mut argv = words(rest)?;
    if argv.is_empty() {
        return Err(Error::msg("usage: kv get|put|delete|list ... (.help lists them)"));
    }
    argv.insert(1, object.to_owned());
    let parsed = KvLine::try_parse_from(argv).map_err(|e| {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or("bad kv command").to_owned();
        Error::msg(first.strip_prefix("error: ").unwrap_or(&first).to_owned())
    })?;
    Ok(parsed.command)
}

/// Runs one line (not a dot-command or history reference).
fn run_line(env: &mut Env, storage: &Storage, object: &str, line: &str) -> Result<()> {
    let first = line.split_whitespace().next().unwrap_or("");
    if first.eq_ignore_ascii_case("kv") {
        let command = kv_command(object, &line[first.len()..])?;
        return kv::call(&mut env.out, storage, command);
    }
    let result = sql::exec(storage, line, &[])?;
    sql::print(&mut env.out, &result)
}

struct History {
    entries: Vec<String>,
    file: PathBuf,
}

impl History {
    fn load(file: PathBuf) -> History {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let all: Vec<String> = text.lines().map(str::to_owned).collect();
        let entries = all[all.len().saturating_sub(HISTORY_KEEP)..].to_vec();
        History { entries, file }
    }

    fn push(&mut self, line: &str) -> Result<()> {
        self.entries.push(line.to_owned());
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.file)?;
        writeln!(file, "{line}")?;
        Ok(())
    }

    /// `!!` or `!N` resolved to the line it names.
    fn expand(&self, line: &str) -> Result<Option<String>> {
        let Some(reference) = line.strip_prefix('!') else { return Ok(None) };
        let entry = if reference == "!" {
            self.entries.last()
        } else {
            let n: usize = reference
                .parse()
                .map_err(|_| Error::msg(format!("{line}: give !N (a history number) or !!")))?;
            n.checked_sub(1).and_then(|i| self.entries.get(i))
        };
        entry.cloned().map(Some).ok_or_else(|| Error::msg(format!("{line}: no such history entry")))
    }
}

/// Runs `durable shell OBJECT` until `.quit` or the end of input. Without a terminal (a
/// script on stdin), the exit status is non-zero when any line failed.
pub fn run(env: &mut Env, object: &str) -> Result<ExitCode> {
    let ns = env.namespace()?;
    let storage = ns.storage(object)?;
    let interactive = std::io::stdin().is_terminal();
    let mut history = History::load(env.data.join(HISTORY_FILE));
    if interactive {
        env.out.line(format!("durable shell on {object:?}; .help for help, .quit to leave"))?;
    }
    let mut failed = false;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut buf = String::new();
    loop {
        if interactive {
            env.out.prompt(&format!("{object}> "))?;
        }
        buf.clear();
        if input.read_line(&mut buf)? == 0 {
            break;
        }
        let mut line = buf.trim().to_owned();
        if line.is_empty() || line.starts_with("--") {
            continue;
        }
        match history.expand(&line) {
            Ok(Some(expanded)) => {
                if interactive {
                    env.out.line(&expanded)?;
                }
                line = expanded;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        }
        history.push(&line)?;
        let outcome = match line.as_str() {
            ".quit" | ".exit" => break,
            ".help" => env.out.line(HELP),
            ".history" => {
                let numbered: Vec<String> = history
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("{:5}  {l}", i + 1))
                    .collect();
                env.out.line(numbered.join("\n"))
            }
            dot if dot.starts_with('.') => {
                Err(Error::msg(format!("{dot}: unknown command (.help lists them)")))
            }
            _ => run_line(env, &storage, object, &line),
        };
        if let Err(e) = outcome {
            if e.broken_pipe {
                return Err(e);
            }
            eprintln!("error: {e}");
            failed = true;
        }
    }
    Ok(if failed && !interactive { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
