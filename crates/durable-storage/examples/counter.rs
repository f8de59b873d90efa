//! A counter object over a namespace: counts visits, and an alarm a moment later reports the
//! count. Run with `cargo run -p durable-storage --example counter [DIR]`.

// A program, not a library: it reports on standard output.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use durable_storage::{
    Actor, AlarmInfo, Context, HandlerError, Namespace, NamespaceOptions, Storage,
};
use tokio::sync::mpsc;

/// The object's code: requests are closures given to `call`; the alarm reports the count.
struct Counter {
    name: String,
    reports: mpsc::UnboundedSender<String>,
}

impl Actor for Counter {
    async fn alarm(
        self: Arc<Self>,
        ctx: Context<Self>,
        info: AlarmInfo,
    ) -> Result<(), HandlerError> {
        let n: i64 = ctx.storage().get("n").await?.unwrap_or(0);
        let late = ctx.storage().clock().now_ms() - info.scheduled_ms;
        let _ = self.reports.send(format!("{}: {n} visits (alarm {late} ms late)", self.name));
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("durable-counter-example"), Into::into);
    let ns = Namespace::open(&dir, NamespaceOptions::default())?;
    let (tx, mut reports) = mpsc::unbounded_channel();
    let make = move |name: &str, _: &Storage| Counter { name: name.into(), reports: tx.clone() };
    // Alarms of every object in the namespace, including those due while we were down.
    let _scheduler = ns.run_alarms(make.clone())?;

    let counter = ns.object("home page", move |s| make("home page", s))?;
    for _ in 0..3 {
        let n = counter
            .call(|ctx| async move {
                let n: i64 = ctx.storage().get("n").await?.unwrap_or(0);
                ctx.storage().put("n", &(n + 1));
                if ctx.storage().get_alarm().await?.is_none() {
                    let soon = ctx.storage().clock().now_ms() + 200;
                    ctx.storage().set_alarm(soon).await?;
                }
                Ok::<i64, durable_storage::txn::Error>(n + 1)
            })
            .await??;
        println!("visit {n}");
    }
    match tokio::time::timeout(Duration::from_secs(5), reports.recv()).await {
        Ok(Some(report)) => println!("{report}"),
        _ => println!("no alarm report"),
    }
    println!("objects in {}: {:?}", dir.display(), ns.names()?);
    Ok(())
}
