//! Standard output: lines, JSON documents and aligned tables, with a closed pipe reported
//! as an error (so `durable kv list room | head` stops quietly instead of panicking).

use std::io::{self, Write};

use serde_json::Value as Json;

use crate::error::Result;

/// Where a command writes its results.
pub struct Out {
    /// Results as JSON documents (`--json`) rather than text.
    pub json: bool,
    stdout: io::StdoutLock<'static>,
}

impl Out {
    /// Standard output, in text or JSON mode.
    pub fn new(json: bool) -> Out {
        Out { json, stdout: io::stdout().lock() }
    }

    /// Writes one line.
    pub fn line(&mut self, text: impl AsRef<str>) -> Result<()> {
        writeln!(self.stdout, "{}", text.as_ref())?;
        Ok(())
    }

    /// Writes one JSON document on its own line.
    pub fn json(&mut self, doc: &Json) -> Result<()> {
        let text = serde_json::to_string(doc)?;
        self.line(text)
    }

    /// Writes an aligned table: a header, a rule, then the rows (cells on one line each).
    pub fn table(&mut self, header: &[String], rows: &[Vec<String>]) -> Result<()> {
        let clean = |s: &str| s.replace(['\n', '\r', '\t'], " ");
        let header: Vec<String> = header.iter().map(|h| clean(h)).collect();
        let rows: Vec<Vec<String>> =
            rows.iter().map(|r| r.iter().map(|c| clean(c)).collect()).collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let render = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            padded.join(" | ").trim_end().to_owned()
        };
        self.line(render(&header))?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        self.line(rule.join("-+-"))?;
        for row in &rows {
            self.line(render(row))?;
        }
        Ok(())
    }
}
