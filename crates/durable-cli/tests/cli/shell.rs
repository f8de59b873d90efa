//! `durable shell`: SQL statements (to `;`, over several lines), kv commands, history, and
//! failures on a script from a pipe; on a pseudo-terminal, rustyline's prompt: completion,
//! continuation prompts, Ctrl-C and history in the home directory.

use std::io::{Read, Write};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::Data;

#[test]
fn runs_sql_and_kv_lines_with_history() {
    let data = Data::new();
    let script = "CREATE TABLE t (x);\n\
                  INSERT INTO t VALUES (1), (2);\n\
                  kv put greeting {\"hi\": \"there\"}\n\
                  kv get greeting\n\
                  kv list --prefix gr\n\
                  SELECT sum(x) AS s FROM t;\n\
                  !6\n\
                  .history\n";
    let run = data.run_with_input(&["shell", "room"], script);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "");
    let out = &run.stdout;
    assert!(out.contains("put 1 key\n{\"hi\":\"there\"}\ngreeting\t{\"hi\":\"there\"}\n"), "{out}");
    assert_eq!(out.matches("s\n-\n3\n").count(), 2, "{out}");
    assert!(out.contains("    7  SELECT sum(x) AS s FROM t;\n    8  .history"), "{out}");
    // A script's history stays in memory: nothing in the data directory or the home folder.
    assert!(!data.path().join(".durable_history").exists());
    assert!(!data.home().join(".durable_history").exists());
    assert_eq!(data.ok(&["kv", "get", "room", "greeting"]), "{\"hi\":\"there\"}\n");
}

#[test]
fn a_statement_runs_when_a_line_ends_with_a_semicolon() {
    let data = Data::new();
    let script = "CREATE TABLE t (\n  x,\n  y\n);\n\
                  INSERT INTO t VALUES\n  (1, 'a;'), -- a comment;\n  (2, 'b');\n\
                  SELECT /* ; */ count(*) AS n\nFROM t; -- done\n\
                  .tables\n\
                  SELECT 'no semicolon at the end' AS last";
    let run = data.run_with_input(&["shell", "o"], script);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    let out = &run.stdout;
    // The INSERT waited for its `;` outside the string and the comment: two rows.
    assert!(out.contains("n\n-\n2\n"), "{out}");
    // What follows the last `;` (a comment) is not an empty statement.
    assert!(!run.stderr.contains("did not contain a statement"), "{run:?}");
    assert!(out.contains("(1 row; rows read: 2, rows written: 0)\nt\n"), "{out}");
    // An unfinished statement at the end of a pipe still runs.
    assert!(out.contains("no semicolon at the end"), "{out}");
    // `.history` numbers whole statements, lines and all.
    let run = data.run_with_input(&["shell", "o"], "SELECT\n1 AS one;\n.history\n");
    assert!(run.stdout.contains("    1  SELECT\n1 AS one;\n    2  .history"), "{run:?}");
}

#[test]
fn a_failing_line_is_reported_and_the_script_fails() {
    let data = Data::new();
    let run = data.run_with_input(
        &["shell", "o"],
        "SELEC 1;\nkv frob\nkv put 'my key' 5\n!99\nkv get 'my key'\n",
    );
    assert_eq!(run.code, 1, "{run:?}");
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 3, "{run:?}");
    assert!(errors[0].contains("syntax error"), "{run:?}");
    assert!(errors[1].contains("frob"), "{run:?}");
    assert!(errors[2].contains("no such history entry"), "{run:?}");
    assert!(run.stdout.ends_with("5\n"), "{run:?}");
}

#[test]
fn a_kv_typo_gets_clap_s_suggestion_and_usage() {
    let data = Data::new();
    let run = data.run_with_input(&["shell", "o"], "kv lst\nkv list --prefx a\n");
    assert_eq!(run.code, 1, "{run:?}");
    let err = &run.stderr;
    assert!(err.contains("error: unrecognized subcommand 'lst'"), "{err}");
    assert!(err.contains("similar subcommand exists: 'list'"), "{err}");
    assert!(err.contains("similar argument exists: '--prefix'"), "{err}");
    assert!(err.contains("Usage: kv list --prefix <PREFIX>\n"), "{err}");
    // The shell has no --help flag to point to.
    assert!(!err.contains("--help"), "{err}");
}

/// `durable shell` on a pseudo-terminal: what it printed, and input typed into it.
struct Terminal {
    child: Child,
    master: std::fs::File,
    screen: Arc<Mutex<String>>,
    /// How far `expect` has read.
    seen: usize,
}

impl Terminal {
    fn open(data: &Data, object: &str) -> Terminal {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pseudo-terminal");
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        let size = rustix::termios::Winsize { ws_row: 40, ws_col: 160, ws_xpixel: 0, ws_ypixel: 0 };
        rustix::termios::tcsetwinsize(&slave, size).unwrap();
        let mut command = data.command();
        command
            .arg("--data")
            .arg(data.path())
            .args(["shell", object])
            .env("TERM", "xterm")
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        let child = command.spawn().expect("the durable binary starts");
        drop(command); // the slave's last copies in this process: reads end when the child does
        let master = std::fs::File::from(master);
        let screen = Arc::new(Mutex::new(String::new()));
        let (mut reader, mut answer) = (master.try_clone().unwrap(), master.try_clone().unwrap());
        let shown = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                // rustyline asks where the cursor is before a prompt: at the left edge.
                if text.contains("\x1b[6n") {
                    let _ = answer.write_all(b"\x1b[1;1R");
                }
                shown.lock().unwrap().push_str(&text);
            }
        });
        Terminal { child, master, screen, seen: 0 }
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// Waits until the output after what was seen so far shows `text`.
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            {
                let screen = self.screen.lock().unwrap();
                if let Some(at) = screen[self.seen..].find(text) {
                    self.seen += at + text.len();
                    return;
                }
                if Instant::now() > deadline {
                    let rest = screen[self.seen..].to_owned();
                    drop(screen);
                    let _ = self.child.kill();
                    panic!("the shell did not show {text:?}; it showed {rest:?}");
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything shown after what `expect` has seen so far.
    fn rest(&self) -> String {
        self.screen.lock().unwrap()[self.seen..].to_owned()
    }

    fn quit(mut self) {
        self.type_keys(".quit\r");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the shell did not quit: {:?}", self.rest());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(self.child.wait().unwrap().success());
    }
}

#[test]
fn on_a_terminal_it_completes_continues_and_keeps_history_at_home() {
    let data = Data::new();
    let mut term = Terminal::open(&data, "room");
    term.expect("durable shell on \"room\"");
    term.expect("room> ");
    term.type_keys("CREATE TABLE users_of_the_room (name);\r");
    term.expect("rows written");
    term.expect("room> ");
    // Tab completes a table name: the statement runs on the completed name.
    term.type_keys("SELECT count(*) AS n FROM users_o\t;\r");
    term.expect("(1 row; rows read: 0, rows written: 0)");
    term.expect("room> ");
    assert!(!term.rest().contains("no such table"), "{}", term.rest());
    // Dot-commands and kv subcommands complete too.
    term.type_keys("kv put a 1\r");
    term.expect("put 1 key");
    term.expect("room> ");
    term.type_keys("kv li\t\r");
    term.expect("a\t1");
    term.expect("room> ");
    term.type_keys(".hist\t\r");
    term.expect("    1  CREATE TABLE users_of_the_room (name);");
    term.expect("room> ");
    // A statement without its `;` continues on the next line, under a continuation prompt.
    term.type_keys("SELECT 40 +\r");
    term.expect("...> ");
    term.type_keys("2 AS answer;\r");
    term.expect("42");
    term.expect("room> ");
    // Ctrl-C drops an unfinished statement.
    term.type_keys("SELECT oops\r");
    term.expect("...> ");
    term.type_keys("\x03");
    term.expect("room> ");
    term.type_keys("SELECT 7 AS seven;\r");
    term.expect("seven");
    term.expect("room> ");
    assert!(!term.rest().contains("error"), "{}", term.rest());
    term.quit();

    // The history is in the home directory, not in the data directory.
    let file = data.home().join(".durable_history");
    let history = std::fs::read_to_string(&file).expect("the history file in $HOME");
    assert!(history.contains("SELECT count(*) AS n FROM users_of_the_room;"), "{history}");
    assert!(history.contains("SELECT 7 AS seven;"), "{history}");
    assert!(!history.contains("oops"), "{history}");
    assert!(!data.path().join(".durable_history").exists());

    // The next session has it: up twice (past `.quit`) runs `SELECT 7 AS seven;` again.
    let mut term = Terminal::open(&data, "room");
    term.expect("room> ");
    term.type_keys("\x1b[A\x1b[A\r");
    term.expect("seven");
    term.expect("room> ");
    term.quit();
}

#[test]
fn durable_history_chooses_the_history_file() {
    let data = Data::new();
    let file = data.root().join("elsewhere.history");
    let data = data.with_env([("DURABLE_HISTORY", file.to_str().unwrap().to_owned())]);
    let mut term = Terminal::open(&data, "o");
    term.expect("o> ");
    term.type_keys("SELECT 'kept' AS w;\r");
    term.expect("kept");
    term.quit();
    let history = std::fs::read_to_string(&file).unwrap();
    assert!(history.contains("SELECT 'kept' AS w;"), "{history}");
    assert!(!data.home().join(".durable_history").exists());
}

#[test]
fn a_history_file_that_cannot_be_written_is_said_once_and_the_session_goes_on() {
    let data = Data::new();
    // A folder where the file should be: neither loading nor appending works.
    let folder = data.root().join("a-folder");
    std::fs::create_dir_all(&folder).unwrap();
    let data = data.with_env([("DURABLE_HISTORY", folder.to_str().unwrap().to_owned())]);
    let mut term = Terminal::open(&data, "o");
    term.expect("o> ");
    term.type_keys("SELECT 'first' AS w;\r");
    term.expect("history not saved to");
    term.expect("first");
    term.expect("o> ");
    term.type_keys("SELECT 'second' AS w;\r");
    term.expect("second");
    term.expect("o> ");
    assert!(!term.rest().contains("history not saved"), "{}", term.rest());
    term.type_keys(".history\r");
    term.expect("    2  SELECT 'second' AS w;");
    term.quit();
}
