//! Builds the SQLite that durable-sql links: the amalgamation that ships inside the
//! `libsqlite3-sys` package, with the project's small patch applied and the runtime's
//! compile-time options.
//!
//! The patch (see `ARCHITECTURE.md`, "The SQLite build") adds two per-statement counters,
//! rows read and rows written, counted at the same VDBE operations as the Durable Objects
//! runtime counts them, and makes `ALTER TABLE ... RENAME TO x` ask the authorizer whether a
//! table named `x` may be created. Every edit is anchored on exact source text and the build
//! fails loudly when an anchor is missing or ambiguous, so a SQLite upgrade cannot silently
//! drop a counter.
//!
//! The resulting archive is named `libsqlite3.a` and its folder is put on the linker's search
//! path; `libsqlite3-sys` (built without `bundled`) asks for `-lsqlite3` and so links it. A
//! symbol that only the patched build defines (`durable_sqlite3_stmt_rows`) is referenced by
//! durable-sql, so linking any other SQLite fails at link time instead of misbehaving.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// The `libsqlite3-sys` release whose amalgamation we build (SQLite 3.54.1).
const SYS_CRATE: &str = "libsqlite3-sys-0.40.0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DURABLE_SQLITE_SOURCE");
    let source = find_amalgamation();
    println!("cargo:rerun-if-changed={}", source.display());
    let original =
        fs::read_to_string(&source).unwrap_or_else(|e| panic!("reading {}: {e}", source.display()));
    let patched = patch(&original);

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let patched_path = out_dir.join("sqlite3-durable.c");
    fs::write(&patched_path, patched).expect("writing the patched amalgamation");

    let mut build = cc::Build::new();
    build
        .file(&patched_path)
        .include(source.parent().expect("amalgamation folder"))
        .opt_level(2)
        .warnings(false)
        .cargo_metadata(false);
    for define in DEFINES {
        match define.split_once('=') {
            Some((name, value)) => build.define(name, Some(value)),
            None => build.define(define, None),
        };
    }
    build.compile("sqlite3");
    println!("cargo:rustc-link-search=native={}", out_dir.display());
    println!("cargo:sqlite_include={}", source.parent().unwrap().display());
}

/// Compile-time options, chosen to match the runtime's SQLite (spec section 3.4).
const DEFINES: &[&str] = &[
    "SQLITE_CORE",
    "SQLITE_THREADSAFE=1",
    "SQLITE_DEFAULT_FOREIGN_KEYS=1",
    "SQLITE_ENABLE_FTS5",
    "SQLITE_ENABLE_RTREE",
    "SQLITE_ENABLE_MATH_FUNCTIONS",
    "SQLITE_ENABLE_UPDATE_DELETE_LIMIT",
    "SQLITE_ENABLE_API_ARMOR",
    "SQLITE_MAX_ALLOCATION_SIZE=16777216",
    "SQLITE_PRINTF_PRECISION_LIMIT=100000",
    "SQLITE_OMIT_SHARED_CACHE",
    "SQLITE_OMIT_DEPRECATED",
    "SQLITE_DEFAULT_MEMSTATUS=0",
    "SQLITE_DEFAULT_PCACHE_INITSZ=0",
    "SQLITE_DEFAULT_WAL_SYNCHRONOUS=2",
    "SQLITE_DQS=3",
    "SQLITE_LIKE_DOESNT_MATCH_BLOBS",
    "SQLITE_USE_ALLOCA",
    "HAVE_USLEEP=1",
    "HAVE_ISNAN=1",
    "_POSIX_THREAD_SAFE_FUNCTIONS",
];

fn find_amalgamation() -> PathBuf {
    if let Some(path) = env::var_os("DURABLE_SQLITE_SOURCE") {
        return PathBuf::from(path);
    }
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("neither CARGO_HOME nor HOME is set");
    let registry = cargo_home.join("registry").join("src");
    let mut found: Vec<PathBuf> = fs::read_dir(&registry)
        .into_iter()
        .flatten()
        .flatten()
        .map(|index| index.path().join(SYS_CRATE).join("sqlite3").join("sqlite3.c"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "durable-sql: cannot find {SYS_CRATE}/sqlite3/sqlite3.c under {}; \
             it is a dependency, so `cargo fetch` brings it, or point \
             DURABLE_SQLITE_SOURCE at an amalgamation",
            registry.display()
        )
    })
}

/// One anchored edit: `anchor` must occur exactly once; `text` goes before or after it.
struct Edit {
    what: &'static str,
    anchor: &'static str,
    insert: &'static str,
    after: bool,
}

fn patch(src: &str) -> String {
    let edits = [
        Edit {
            what: "counter fields in struct Vdbe",
            anchor: "  u32 aCounter[9];        /* Counters used by sqlite3_stmt_status() */\n",
            insert: "  sqlite3_int64 nDurableRowsRead;    /* durable-storage: rows read */\n  \
                     sqlite3_int64 nDurableRowsWritten; /* durable-storage: rows written */\n",
            after: true,
        },
        Edit {
            what: "OP_Count",
            anchor: "    rc = sqlite3BtreeCount(db, pCrsr, &nEntry);\n",
            insert: "    p->nDurableRowsRead += nEntry;\n",
            after: true,
        },
        Edit {
            what: "OP_SeekGE/GT/LE/LT",
            anchor: "#ifdef SQLITE_TEST\n  sqlite3_search_count++;\n#endif\n  \
                     if( oc>=OP_SeekGE ){",
            insert: "  p->nDurableRowsRead++;\n",
            after: false,
        },
        Edit {
            what: "OP_SeekRowid/OP_NotExists",
            anchor: "  VdbeBranchTaken(res!=0,2);\n  pC->seekResult = res;\n",
            insert: "  p->nDurableRowsRead++;\n",
            after: true,
        },
        Edit {
            what: "OP_Insert",
            anchor: "  assert( (pOp->p5 & OPFLAG_LASTROWID)==0 || (pOp->p5 & OPFLAG_NCHANGE)!=0 );\n",
            insert: "  if( !pC->isEphemeral ) p->nDurableRowsWritten++;\n",
            after: true,
        },
        Edit {
            what: "OP_Delete",
            anchor: "  /* Invoke the update-hook if required. */\n  if( opflags & OPFLAG_NCHANGE ){\n",
            insert: "    if( !pC->isEphemeral ) p->nDurableRowsWritten++;\n",
            after: true,
        },
        Edit {
            what: "OP_Last",
            anchor: "  rc = sqlite3BtreeLast(pCrsr, &res);\n  pC->nullRow = (u8)res;\n  \
                     pC->deferredMoveto = 0;\n  pC->cacheStatus = CACHE_STALE;\n  \
                     if( rc ) goto abort_due_to_error;\n",
            insert: "  p->nDurableRowsRead++;\n",
            after: true,
        },
        Edit {
            what: "OP_Rewind",
            anchor: "  if( rc ) goto abort_due_to_error;\n  pC->nullRow = (u8)res;\n  \
                     if( pOp->p2>0 ){\n",
            insert: "  p->nDurableRowsRead++;\n",
            after: false,
        },
        Edit {
            what: "OP_Next/OP_Prev",
            anchor: "    p->aCounter[pOp->p5]++;\n",
            insert: "    p->nDurableRowsRead++;\n",
            after: true,
        },
        Edit {
            what: "OP_IdxInsert",
            anchor: "  if( pOp->p5 & OPFLAG_NCHANGE ) p->nChange++;\n  \
                     assert( pC->eCurType==CURTYPE_BTREE );\n  assert( pC->isTable==0 );\n",
            insert: "  if( !pC->isEphemeral ) p->nDurableRowsWritten++;\n",
            after: true,
        },
        Edit {
            what: "OP_Clear",
            anchor: "  if( pOp->p3 ){\n    p->nChange += nChange;\n",
            insert: "    p->nDurableRowsWritten += nChange;\n",
            after: true,
        },
        Edit {
            what: "OP_VNext",
            anchor: "  rc = pModule->xNext(pCur->uc.pVCur);\n  sqlite3VtabImportErrmsg(p, pVtab);\n  \
                     if( rc ) goto abort_due_to_error;\n",
            insert: "  p->nDurableRowsRead++;\n",
            after: true,
        },
        Edit {
            what: "OP_VUpdate",
            anchor: "      p->nChange++;\n    }\n    if( rc ) goto abort_due_to_error;\n",
            insert: "      p->nDurableRowsWritten++;\n",
            after: false,
        },
        Edit {
            what: "ALTER TABLE RENAME TO asks to create the destination",
            anchor: "  if( sqlite3AuthCheck(pParse, SQLITE_ALTER_TABLE, zDb, pTab->zName, 0) ){\n    \
                     goto exit_rename_table;\n  }\n",
            insert: "  if( sqlite3AuthCheck(pParse, SQLITE_CREATE_TABLE, zName, 0, zDb) ){\n    \
                     goto exit_rename_table;\n  }\n",
            after: true,
        },
    ];
    let mut out = src.to_owned();
    for edit in &edits {
        let count = out.matches(edit.anchor).count();
        assert!(count == 1, "durable-sql patch '{}': anchor found {count} times", edit.what);
        let at = out.find(edit.anchor).unwrap();
        let at = if edit.after { at + edit.anchor.len() } else { at };
        out.insert_str(at, edit.insert);
    }
    out.push_str(ACCESSOR);
    out
}

/// Appended to the amalgamation: the accessor durable-sql calls.
const ACCESSOR: &str = r#"
/* durable-storage: read (and optionally reset) a statement's row counters. */
SQLITE_API void durable_sqlite3_stmt_rows(
  sqlite3_stmt *pStmt, int resetFlag, sqlite3_int64 *pRead, sqlite3_int64 *pWritten
){
  Vdbe *p = (Vdbe*)pStmt;
  if( p==0 ) return;
  if( pRead ) *pRead = p->nDurableRowsRead;
  if( pWritten ) *pWritten = p->nDurableRowsWritten;
  if( resetFlag ){
    p->nDurableRowsRead = 0;
    p->nDurableRowsWritten = 0;
  }
}
"#;
