//! The namespace-wide alarm index and the scheduler (issue 11): only due objects are opened,
//! alarms due while the process was down are delivered, re-armed alarms come back, retries
//! keep the object, stale index rows are repaired.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use durable_storage::{Actor, AlarmInfo, Context, HandlerError, ManualClock, Namespace, Storage};
use tokio::sync::mpsc;

use crate::support::{Dir, HOUR, MINUTE, T0, eventually, fast, now, rt};

type Fired = mpsc::UnboundedSender<(String, AlarmInfo)>;

struct Alarmed {
    name: String,
    fired: Fired,
    /// On the first firing, set the alarm again this far after the scheduled time.
    rearm: Option<i64>,
    /// Fail this many attempts first (shared across instances).
    failures: Arc<AtomicU32>,
}

impl Actor for Alarmed {
    async fn alarm(
        self: Arc<Self>,
        ctx: Context<Self>,
        info: AlarmInfo,
    ) -> Result<(), HandlerError> {
        let _ = self.fired.send((self.name.clone(), info));
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err("not yet".into());
        }
        let n: i64 = ctx.storage().get("fired").await?.unwrap_or(0);
        ctx.storage().put("fired", &(n + 1));
        if let Some(ahead) = self.rearm
            && n == 0
        {
            ctx.storage().set_alarm(info.scheduled_ms + ahead).await?;
        }
        Ok(())
    }
}

fn maker(
    fired: &Fired,
    rearm: Option<i64>,
    failures: u32,
) -> impl Fn(&str, &Storage) -> Alarmed + Send + Sync + 'static {
    let fired = fired.clone();
    let failures = Arc::new(AtomicU32::new(failures));
    move |name: &str, _: &Storage| Alarmed {
        name: name.to_string(),
        fired: fired.clone(),
        rearm,
        failures: failures.clone(),
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(String, AlarmInfo)>) -> (String, AlarmInfo) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an alarm fired in time")
        .expect("channel open")
}

async fn none_within(rx: &mut mpsc::UnboundedReceiver<(String, AlarmInfo)>, ms: u64) {
    let r = tokio::time::timeout(Duration::from_millis(ms), rx.recv()).await;
    assert!(r.is_err(), "no alarm expected, got {r:?}");
}

/// Sets `name`'s alarm through a plain handle and commits it.
fn set_alarm(ns: &Namespace, name: &str, at: i64) {
    let s = ns.storage(name).unwrap();
    now(s.set_alarm(at));
    s.sync().wait().unwrap();
}

fn fired_count(ns: &Namespace, name: &str) -> Option<i64> {
    now(ns.storage(name).unwrap().get::<i64>("fired"))
}

#[test]
fn of_a_thousand_objects_only_the_due_ones_are_opened() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    let due: BTreeSet<String> = (0..1000).filter(|i| i % 100 == 7).map(name).collect();
    {
        let ns = dir.open(fast(&clock));
        // Creating a database costs a few fsyncs whatever `synchronous` says; copies of one
        // created database keep the set-up fast. Each object then sets its own alarm.
        drop(ns.storage(&name(0)).unwrap());
        for i in 1..1000 {
            std::fs::copy(ns.path_of(&name(0)), ns.path_of(&name(i))).unwrap();
        }
        for i in 0..1000 {
            let at = if due.contains(&name(i)) { T0 + MINUTE } else { T0 + 24 * HOUR };
            set_alarm(&ns, &name(i), at);
        }
        assert_eq!(ns.alarms().unwrap().len(), 1000);
        assert!(ns.open_names().is_empty());
    }
    let ns = dir.open(fast(&clock));
    let (tx, mut rx) = mpsc::unbounded_channel();
    rt().block_on(async {
        let scheduler = ns.run_alarms(maker(&tx, None, 0)).unwrap();
        none_within(&mut rx, 50).await;
        assert_eq!(ns.opened_count(), 0, "nothing is due yet");
        clock.advance(MINUTE);
        let mut woken = BTreeSet::new();
        for _ in 0..due.len() {
            let (name, info) = next(&mut rx).await;
            assert_eq!(info, AlarmInfo { scheduled_ms: T0 + MINUTE, retry_count: 0 });
            woken.insert(name);
        }
        assert_eq!(woken, due);
        eventually("the fired alarms leave the index", || ns.alarms().unwrap().len() == 990).await;
        eventually("the woken objects close", || ns.open_names().is_empty()).await;
        none_within(&mut rx, 50).await;
        assert_eq!(ns.opened_count(), 10, "only the due objects were opened");
        assert_eq!(scheduler.woken_count(), 10);
        scheduler.stop();
    });
    for name in &due {
        assert_eq!(fired_count(&ns, name), Some(1));
    }
    assert_eq!(fired_count(&ns, &name(8)), None);
}

fn name(i: i32) -> String {
    format!("obj-{i:04}")
}

#[test]
fn alarms_due_while_the_process_was_down_are_delivered_after_a_restart() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        // Set through the object runtime, then "crash": the runtime is dropped.
        let runtime = rt();
        let ns = dir.open(fast(&clock));
        let make = maker(&tx, None, 0);
        runtime.block_on(async {
            let object = ns.object("sleeper", move |s| make("sleeper", s)).unwrap();
            object
                .call(|ctx| async move { ctx.storage().set_alarm(T0 + HOUR).await })
                .await
                .unwrap()
                .unwrap();
        });
        drop(runtime);
    }
    none_within_sync(&mut rx);
    clock.set(T0 + 3 * HOUR);
    let ns = dir.open(fast(&clock));
    assert_eq!(ns.alarms().unwrap(), [("sleeper".to_string(), T0 + HOUR)]);
    rt().block_on(async {
        let _scheduler = ns.run_alarms(maker(&tx, None, 0)).unwrap();
        let (name, info) = next(&mut rx).await;
        assert_eq!(name, "sleeper");
        assert_eq!(info, AlarmInfo { scheduled_ms: T0 + HOUR, retry_count: 0 });
        eventually("the alarm leaves the index", || ns.alarms().unwrap().is_empty()).await;
        eventually("the object closes", || ns.open_names().is_empty()).await;
    });
    assert_eq!(fired_count(&ns, "sleeper"), Some(1));
    assert_eq!(now(ns.storage("sleeper").unwrap().get_alarm()), None);
}

fn none_within_sync(rx: &mut mpsc::UnboundedReceiver<(String, AlarmInfo)>) {
    assert!(rx.try_recv().is_err(), "no alarm may fire before its time");
}

#[test]
fn a_re_armed_alarm_closes_the_object_and_wakes_it_again_later() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    let ns = dir.open(fast(&clock));
    set_alarm(&ns, "r", T0 + MINUTE);
    let (tx, mut rx) = mpsc::unbounded_channel();
    rt().block_on(async {
        let _scheduler = ns.run_alarms(maker(&tx, Some(HOUR), 0)).unwrap();
        clock.advance(MINUTE);
        assert_eq!(next(&mut rx).await.1.scheduled_ms, T0 + MINUTE);
        let again = T0 + MINUTE + HOUR;
        eventually("the new time is indexed", || ns.indexed_alarm("r").unwrap() == Some(again))
            .await;
        eventually("the object closes until then", || ns.open_names().is_empty()).await;
        none_within(&mut rx, 50).await;
        clock.advance(HOUR);
        assert_eq!(next(&mut rx).await.1.scheduled_ms, again);
        eventually("the index empties", || ns.alarms().unwrap().is_empty()).await;
        eventually("the object closes", || ns.open_names().is_empty()).await;
    });
    assert_eq!(ns.opened_count(), 3, "set, first firing, second firing");
    assert_eq!(fired_count(&ns, "r"), Some(2));
}

#[test]
fn a_failing_handler_keeps_its_object_open_through_the_retries() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    let ns = dir.open(fast(&clock));
    set_alarm(&ns, "flaky", T0 + MINUTE);
    let (tx, mut rx) = mpsc::unbounded_channel();
    rt().block_on(async {
        let _scheduler = ns.run_alarms(maker(&tx, None, 1)).unwrap();
        clock.advance(MINUTE);
        assert_eq!(next(&mut rx).await.1.retry_count, 0);
        {
            // A call through the open object answers after the failed handler's turn has
            // ended, so its retry is scheduled before the clock moves on.
            let make = maker(&tx, None, 0);
            let handle = ns.object("flaky", move |storage| make("flaky", storage)).unwrap();
            handle.call(|_| async {}).await.unwrap();
        }
        assert_eq!(ns.open_names(), ["flaky"], "kept open while the alarm is due");
        assert_eq!(ns.indexed_alarm("flaky").unwrap(), Some(T0 + MINUTE));
        clock.advance(durable_storage::txn::ALARM_FIRST_RETRY_MS);
        let (_, retry) = next(&mut rx).await;
        assert_eq!(retry, AlarmInfo { scheduled_ms: T0 + MINUTE, retry_count: 1 });
        eventually("the index empties", || ns.alarms().unwrap().is_empty()).await;
        eventually("the object closes", || ns.open_names().is_empty()).await;
    });
    assert_eq!(ns.opened_count(), 2);
}

#[test]
fn a_stale_index_row_is_repaired_without_firing() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    {
        let ns = dir.open(fast(&clock));
        set_alarm(&ns, "stale", T0 + MINUTE);
    }
    // The alarm is deleted behind the namespace's back (as if the index write was lost).
    {
        let path = dir.path().join(Namespace::file_name("stale"));
        let s = Storage::open(path, Default::default()).unwrap();
        now(s.delete_alarm());
        s.sync().wait().unwrap();
    }
    let ns = dir.open(fast(&clock));
    assert_eq!(ns.indexed_alarm("stale").unwrap(), Some(T0 + MINUTE));
    let (tx, mut rx) = mpsc::unbounded_channel();
    rt().block_on(async {
        let _scheduler = ns.run_alarms(maker(&tx, None, 0)).unwrap();
        clock.advance(2 * MINUTE);
        eventually("the stale row goes", || ns.alarms().unwrap().is_empty()).await;
        eventually("the object closes", || ns.open_names().is_empty()).await;
        none_within(&mut rx, 50).await;
    });
    assert_eq!(ns.opened_count(), 1);
}

#[test]
fn the_index_follows_every_committed_alarm_change_of_an_open_object() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    let ns = dir.open(fast(&clock));
    let s = ns.storage("o").unwrap();
    now(s.set_alarm(T0 + MINUTE));
    assert_eq!(ns.indexed_alarm("o").unwrap(), None, "not committed yet");
    s.sync().wait().unwrap();
    assert_eq!(ns.indexed_alarm("o").unwrap(), Some(T0 + MINUTE));
    // A rolled-back change leaves the index alone; the committed one after it reaches it.
    let undone: Result<(), durable_storage::txn::Error> = s.transaction_sync(|| {
        now(s.set_alarm(T0 + HOUR));
        Err(durable_storage::txn::Error::Aborted("undo".into()))
    });
    assert!(undone.is_err());
    s.put("k", &1i64);
    s.sync().wait().unwrap();
    assert_eq!(ns.indexed_alarm("o").unwrap(), Some(T0 + MINUTE));
    now(s.set_alarm(T0 + HOUR));
    s.sync().wait().unwrap();
    assert_eq!(ns.indexed_alarm("o").unwrap(), Some(T0 + HOUR));
    // `delete_all` deletes the alarm (the default compatibility flag), durably at once.
    now(s.delete_all());
    assert_eq!(ns.indexed_alarm("o").unwrap(), None);
    now(s.set_alarm(T0 + MINUTE));
    s.sync().wait().unwrap();
    now(s.delete_alarm());
    s.sync().wait().unwrap();
    assert_eq!(ns.indexed_alarm("o").unwrap(), None);
}
