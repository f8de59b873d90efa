//! `durable shell`: a prompt on one object. Each entry is one turn, committed when it ends:
//! an SQL statement (lines are read until one ends with `;`; several statements in one entry
//! run as one exec), a `kv` command, or a dot-command (one line each).
//!
//! On a terminal the prompt is rustyline's line editor: editing, tab completion of the shell's
//! commands, SQL keywords and the object's tables, and history in `~/.durable_history` (or
//! `DURABLE_HISTORY`). Read from a pipe, the shell reads plain lines, prints no prompt, keeps
//! history only in memory (`.history`, `!N`) and exits non-zero when any entry failed.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use durable_storage::{SqlValue, Storage};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};

use crate::Env;
use crate::error::{Error, Result};
use crate::kv::{self, KvCommand};
use crate::sql;

/// The history file's name in the home directory.
pub const HISTORY_FILE: &str = ".durable_history";

/// Entries of history kept in the file.
const HISTORY_KEEP: usize = 1000;

const HELP: &str = "\
SQL runs until a line ends with `;` (one exec), e.g.  SELECT * FROM users WHERE id = 1;
kv get KEY...                          values as JSON
kv put KEY VALUE                       VALUE is the rest of the line, JSON or text
kv delete KEY...                       whether the key existed / how many did
kv list [--prefix P] [--start S] [--start-after S] [--end E] [--limit N] [--reverse]
.history        numbered history;  !N runs entry N again, !! the last one
.tables         the object's tables
.help           this text
.quit / .exit   leave (so does end of input; Ctrl-C drops an unfinished statement)
Quote a key or value that holds spaces with single quotes: kv get 'my key'";

/// The `kv` commands of the shell, parsed by the same definitions as `durable kv`.
#[derive(Parser, Debug)]
#[command(
    name = "kv",
    bin_name = "kv",
    no_binary_name = true,
    disable_help_flag = true,
    disable_help_subcommand = true
)]
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
    // clap's whole message: what is wrong, a similar command when there is one, the usage.
    let parsed = KvLine::try_parse_from(argv).map_err(|e| {
        // (Not its pointer to a help flag the shell does not have: `.help` is the shell's.)
        let rendered = e.render().to_string();
        let text = rendered.strip_prefix("error: ").unwrap_or(&rendered);
        let text: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("For more information"))
            // The shell gives the object itself.
            .map(|l| if l.starts_with("Usage:") { l.replace(" <OBJECT>", "") } else { l.into() })
            .collect();
        Error::lines(text.join("\n"))
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

/// The shell's dot-commands, for `.help` and completion.
const DOT_COMMANDS: [&str; 5] = [".exit", ".help", ".history", ".quit", ".tables"];

/// The `kv` subcommands, for completion.
const KV_COMMANDS: [&str; 4] = ["delete", "get", "list", "put"];

/// SQL keywords offered by completion (with the object's tables).
const SQL_KEYWORDS: [&str; 40] = [
    "ALTER", "AND", "AS", "ASC", "BETWEEN", "BY", "CREATE", "DELETE", "DESC", "DISTINCT", "DROP",
    "EXISTS", "FROM", "GROUP", "HAVING", "IN", "INDEX", "INSERT", "INTO", "IS", "JOIN", "LEFT",
    "LIKE", "LIMIT", "NOT", "NULL", "OFFSET", "ON", "OR", "ORDER", "PRAGMA", "PRIMARY", "KEY",
    "SELECT", "SET", "TABLE", "UPDATE", "VALUES", "WHERE", "WITH",
];

/// Where a finished SQL entry ends: the byte after its last character outside string
/// literals, quoted names and comments, when that character is `;` (`None`: not finished).
/// What follows (a comment) is not part of the entry: the runtime refuses an empty trailing
/// statement.
pub fn statement_end(text: &str) -> Option<usize> {
    let mut chars = text.char_indices().peekable();
    let mut last = None;
    while let Some((at, c)) = chars.next() {
        match c {
            '\'' | '"' | '`' | '[' => {
                let close = if c == '[' { ']' } else { c };
                // A doubled quote inside is an escaped quote: the loop sees it as a close
                // and a new open, which ends in the same state.
                match chars.by_ref().find(|&(_, d)| d == close) {
                    Some(end) => last = Some(end),
                    None => return None,
                }
            }
            '-' if chars.peek().is_some_and(|&(_, d)| d == '-') => {
                if !chars.by_ref().any(|(_, d)| d == '\n') {
                    break;
                }
            }
            '/' if chars.peek().is_some_and(|&(_, d)| d == '*') => {
                chars.next();
                let mut star = false;
                let mut closed = false;
                for (_, d) in chars.by_ref() {
                    if star && d == '/' {
                        closed = true;
                        break;
                    }
                    star = d == '*';
                }
                if !closed {
                    return None;
                }
            }
            c if c.is_whitespace() => {}
            c => last = Some((at, c)),
        }
    }
    match last {
        Some((at, ';')) => Some(at + 1),
        _ => None,
    }
}

/// Whether a first line is a one-line shell command (not SQL).
fn is_command(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or("");
    line.starts_with('.') || line.starts_with('!') || first.eq_ignore_ascii_case("kv")
}

/// The object's own tables and views (not the runtime's `_cf_` tables), for `.tables` and
/// completion.
fn table_names(storage: &Storage) -> Result<Vec<String>> {
    let query = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') \
                 AND name NOT LIKE 'sqlite!_%' ESCAPE '!' AND name NOT LIKE '!_cf!_%' ESCAPE '!' \
                 ORDER BY name";
    let rows = storage.sql()?.exec(query, &[])?.to_raw_array()?;
    Ok(rows
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(SqlValue::Text(name)) => Some(name),
            _ => None,
        })
        .collect())
}

/// Tab completion on the terminal: commands first on a line, `kv` subcommands after `kv`,
/// SQL keywords and the object's tables elsewhere.
struct ShellHelper {
    tables: Vec<String>,
}

impl ShellHelper {
    /// The candidates for `word`, preceded on its line by `before`.
    fn candidates(&self, before: &str, word: &str) -> Vec<String> {
        let previous: Vec<&str> = before.split_whitespace().collect();
        let pool: Vec<&str> = match previous.as_slice() {
            [] if word.starts_with('.') => DOT_COMMANDS.to_vec(),
            [] => std::iter::once("kv").chain(SQL_KEYWORDS).collect(),
            [kv] if kv.eq_ignore_ascii_case("kv") => KV_COMMANDS.to_vec(),
            [kv, ..] if kv.eq_ignore_ascii_case("kv") => Vec::new(),
            _ => self.tables.iter().map(String::as_str).chain(SQL_KEYWORDS).collect(),
        };
        let lower = word.chars().any(|c| c.is_lowercase()) && !word.is_empty();
        let mut out: Vec<String> = pool
            .into_iter()
            .filter(|c| c.len() >= word.len() && c[..word.len()].eq_ignore_ascii_case(word))
            .map(|c| {
                // Keywords follow the case being typed; names keep their own.
                if lower && SQL_KEYWORDS.contains(&c) { c.to_ascii_lowercase() } else { c.into() }
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..pos];
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '.')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        Ok((start, self.candidates(&before[..start], &before[start..])))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

/// The history file: `DURABLE_HISTORY`, else `.durable_history` in the home directory.
fn history_path() -> Option<PathBuf> {
    match std::env::var_os("DURABLE_HISTORY") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => std::env::home_dir().map(|home| home.join(HISTORY_FILE)),
    }
}

/// What one read gave.
enum Read {
    /// A line (without its newline).
    Line(String),
    /// Ctrl-C: drop the unfinished entry.
    Interrupted,
    /// End of input (Ctrl-D, or the end of the pipe).
    End,
}

/// Where the shell's lines come from.
enum Input {
    /// rustyline on a terminal, with the history file it appends to.
    Terminal { editor: Box<Editor<ShellHelper, DefaultHistory>>, file: Option<PathBuf> },
    /// Plain lines from a pipe or a file.
    Piped(std::io::StdinLock<'static>),
}

impl Input {
    fn terminal(storage: &Storage) -> Result<Input> {
        let config = Config::builder()
            .max_history_size(HISTORY_KEEP)
            .map_err(readline_error)?
            .auto_add_history(false)
            .completion_type(CompletionType::List)
            .build();
        let mut editor = Editor::with_config(config).map_err(readline_error)?;
        editor.set_helper(Some(ShellHelper { tables: table_names(storage).unwrap_or_default() }));
        let file = history_path();
        if let Some(file) = &file {
            // A missing file is a first session; an unreadable one starts an empty history.
            let _ = editor.load_history(file);
        }
        Ok(Input::Terminal { editor: Box::new(editor), file })
    }

    fn read(&mut self, prompt: &str) -> Result<Read> {
        match self {
            Input::Terminal { editor, .. } => match editor.readline(prompt) {
                Ok(line) => Ok(Read::Line(line)),
                Err(ReadlineError::Interrupted) => Ok(Read::Interrupted),
                Err(ReadlineError::Eof) => Ok(Read::End),
                Err(e) => Err(readline_error(e)),
            },
            Input::Piped(input) => {
                let mut buf = String::new();
                if input.read_line(&mut buf)? == 0 {
                    return Ok(Read::End);
                }
                let line = buf.strip_suffix('\n').unwrap_or(&buf);
                Ok(Read::Line(line.strip_suffix('\r').unwrap_or(line).to_owned()))
            }
        }
    }

    /// History before this session (the file's, on a terminal).
    fn previous(&self) -> Vec<String> {
        match self {
            Input::Terminal { editor, .. } => editor.history().iter().cloned().collect(),
            Input::Piped(_) => Vec::new(),
        }
    }

    /// Records an entry: in the editor's history and at the end of the file.
    fn remember(&mut self, entry: &str) {
        if let Input::Terminal { editor, file } = self {
            let _ = editor.add_history_entry(entry);
            let failed = file.as_ref().and_then(|path| editor.append_history(path).err());
            if let Some(e) = failed
                && let Some(path) = file.take()
            {
                // Said once; the session goes on with its history in memory.
                eprintln!("durable: history not saved to {}: {e}", path.display());
            }
        }
    }

    fn tables_changed(&mut self, storage: &Storage) {
        if let Input::Terminal { editor, .. } = self
            && let Some(helper) = editor.helper_mut()
        {
            helper.tables = table_names(storage).unwrap_or_default();
        }
    }
}

fn readline_error(e: ReadlineError) -> Error {
    Error::msg(format!("line editor: {e}"))
}

/// The session's numbered history: what came before and every entry since.
struct History {
    entries: Vec<String>,
}

impl History {
    /// `!!` or `!N` resolved to the entry it names.
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

/// Runs one entry: a dot-command, a `kv` command or SQL. `Ok(false)` means leave.
fn run_entry(
    env: &mut Env,
    storage: &Storage,
    object: &str,
    history: &History,
    entry: &str,
) -> Result<bool> {
    match entry {
        ".quit" | ".exit" => return Ok(false),
        ".help" => env.out.line(HELP)?,
        ".history" => {
            let numbered: Vec<String> = history
                .entries
                .iter()
                .enumerate()
                .map(|(i, l)| format!("{:5}  {l}", i + 1))
                .collect();
            env.out.line(numbered.join("\n"))?;
        }
        ".tables" => {
            for name in table_names(storage)? {
                env.out.line(name)?;
            }
        }
        dot if dot.starts_with('.') => {
            return Err(Error::msg(format!("{dot}: unknown command (.help lists them)")));
        }
        _ => run_line(env, storage, object, entry)?,
    }
    Ok(true)
}

/// Runs `durable shell OBJECT` until `.quit` or the end of input. Without a terminal (a
/// script on stdin), the exit status is non-zero when any entry failed.
pub fn run(env: &mut Env, object: &str) -> Result<ExitCode> {
    let ns = env.namespace()?;
    let storage = ns.storage(object)?;
    let interactive = std::io::stdin().is_terminal();
    let mut input = if interactive {
        env.out.line(format!("durable shell on {object:?}; .help for help, .quit to leave"))?;
        Input::terminal(&storage)?
    } else {
        Input::Piped(std::io::stdin().lock())
    };
    let mut history = History { entries: input.previous() };
    let prompt = format!("{object}> ");
    let more = format!("{:>width$}> ", "...", width = object.chars().count());
    let mut failed = false;
    let mut pending = String::new();
    loop {
        let (line, last) = match input.read(if pending.is_empty() { &prompt } else { &more })? {
            Read::Line(line) => (line, false),
            Read::Interrupted => {
                pending.clear();
                continue;
            }
            // From a pipe an unfinished statement at the end still runs; on a terminal
            // Ctrl-D leaves without it.
            Read::End if interactive || pending.trim().is_empty() => break,
            Read::End => (String::new(), true),
        };
        let entry = if last {
            std::mem::take(&mut pending).trim().to_owned()
        } else if pending.is_empty() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with("--") {
                continue;
            }
            if is_command(trimmed) {
                trimmed.to_owned()
            } else if let Some(end) = statement_end(trimmed) {
                trimmed[..end].to_owned()
            } else {
                pending = line;
                continue;
            }
        } else {
            pending.push('\n');
            pending.push_str(&line);
            let Some(end) = statement_end(&pending) else { continue };
            let entry = pending[..end].trim().to_owned();
            pending.clear();
            entry
        };
        let entry = match history.expand(&entry) {
            Ok(Some(expanded)) => {
                if interactive {
                    env.out.line(&expanded)?;
                }
                expanded
            }
            Ok(None) => entry,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        history.entries.push(entry.clone());
        input.remember(&entry);
        match run_entry(env, &storage, object, &history, &entry) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) if e.broken_pipe => return Err(e),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
        input.tables_changed(&storage);
    }
    Ok(if failed && !interactive { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
