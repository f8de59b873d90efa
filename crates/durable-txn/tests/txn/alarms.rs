//! Alarm events: delivery, `get_alarm` inside the handler, retries with backoff, re-arming,
//! restart delivery (spec sections 1.5, 4.3; legacy-kv-and-gates 2.14).

use std::sync::Arc;
use std::time::Duration;

use durable_sql::testing::ManualClock;
use durable_txn::{Actor, AlarmInfo, Context, HandlerError, Object, Storage};
use tokio::sync::mpsc;

use crate::support::Dir;

const T0: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;

/// What an alarm handler saw.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    info: AlarmInfo,
    alarm_inside: Option<i64>,
    now: i64,
}

struct Alarmed {
    seen: mpsc::UnboundedSender<Seen>,
    clock: ManualClock,
    /// Fail the first N attempts.
    failures: u32,
    /// Set a new alarm this far ahead from the handler, once.
    rearm: Option<i64>,
}

impl Actor for Alarmed {
    async fn alarm(
        self: Arc<Self>,
        ctx: Context<Self>,
        info: AlarmInfo,
    ) -> Result<(), HandlerError> {
        let alarm_inside = ctx.storage().get_alarm().await?;
        let now = self.clock.now_ms();
        let _ = self.seen.send(Seen { info, alarm_inside, now });
        ctx.storage().put("alarms", &(info.retry_count as i64));
        if info.retry_count < self.failures {
            return Err("handler failed".into());
        }
        if let Some(ahead) = self.rearm
            && info.scheduled_ms == T0 + HOUR
        {
            ctx.storage().set_alarm(now + ahead).await?;
        }
        Ok(())
    }
}

struct Setup {
    object: Object<Alarmed>,
    seen: mpsc::UnboundedReceiver<Seen>,
    clock: ManualClock,
}

fn spawn(dir: &Dir, clock: &ManualClock, failures: u32, rearm: Option<i64>) -> Setup {
    let (tx, rx) = mpsc::unbounded_channel();
    let path = dir.path();
    let c = clock.clone();
    let open = move || {
        let storage = Storage::open(&path, Default::default())?;
        storage.set_clock(Arc::new(c.clone()));
        Ok(storage)
    };
    let c = clock.clone();
    let object = Object::spawn(open, move |_| Alarmed {
        seen: tx.clone(),
        clock: c.clone(),
        failures,
        rearm,
    });
    Setup { object, seen: rx, clock: clock.clone() }
}

/// The next handler run; returns once the handler's turn has ended (the runtime has then
/// scheduled what comes next from the clock's current time).
async fn next(s: &mut Setup) -> Seen {
    let seen = tokio::time::timeout(Duration::from_secs(5), s.seen.recv())
        .await
        .expect("an alarm fired in time")
        .expect("channel open");
    settled(&s.object).await;
    seen
}

/// Returns after every turn the object had started has ended: the object runs one turn at a
/// time, so an empty call's answer comes after them (a fixed sleep would race a slow box).
async fn settled(object: &Object<Alarmed>) {
    object.call(|_| async {}).await.unwrap();
}

async fn none_within(seen: &mut mpsc::UnboundedReceiver<Seen>, ms: u64) {
    let r = tokio::time::timeout(Duration::from_millis(ms), seen.recv()).await;
    assert!(r.is_err(), "no alarm expected, got {r:?}");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn stored(object: &Object<Alarmed>) -> Option<i64> {
    object.call(|ctx| async move { ctx.storage().get_alarm().await.unwrap() }).await.unwrap()
}

#[test]
fn an_alarm_fires_when_due_and_is_then_cleared() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    rt().block_on(async {
        let mut s = spawn(&dir, &clock, 0, None);
        s.object
            .call(|ctx| async move { ctx.storage().set_alarm(T0 + HOUR).await })
            .await
            .unwrap()
            .unwrap();
        none_within(&mut s.seen, 30).await;
        s.clock.advance(HOUR - 1);
        none_within(&mut s.seen, 30).await;
        s.clock.advance(1);
        let seen = next(&mut s).await;
        assert_eq!(seen.info, AlarmInfo { scheduled_ms: T0 + HOUR, retry_count: 0 });
        assert_eq!(seen.alarm_inside, None, "get_alarm reads none while its handler runs");
        assert_eq!(stored(&s.object).await, None, "a successful alarm is deleted");
    });
}

#[test]
fn a_failing_handler_is_retried_with_exponential_backoff() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    rt().block_on(async {
        let mut s = spawn(&dir, &clock, 3, None);
        s.object
            .call(|ctx| async move { ctx.storage().set_alarm(T0 + HOUR).await })
            .await
            .unwrap()
            .unwrap();
        s.clock.advance(HOUR);
        let first = next(&mut s).await;
        assert_eq!(first.info.retry_count, 0);
        let mut delay = 2_000;
        for retry in 1..=3u32 {
            s.clock.advance(delay - 1);
            none_within(&mut s.seen, 30).await;
            s.clock.advance(1);
            let seen = next(&mut s).await;
            assert_eq!(seen.info, AlarmInfo { scheduled_ms: T0 + HOUR, retry_count: retry });
            delay *= 2;
        }
        assert_eq!(stored(&s.object).await, None);
    });
}

#[test]
fn retries_stop_after_six() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    rt().block_on(async {
        let mut s = spawn(&dir, &clock, u32::MAX, None);
        s.object
            .call(|ctx| async move { ctx.storage().set_alarm(T0 + 1).await })
            .await
            .unwrap()
            .unwrap();
        s.clock.advance(1);
        let mut attempts = vec![next(&mut s).await.info.retry_count];
        for _ in 0..10 {
            // Let the handler finish (and schedule its retry) before the clock moves.
            settled(&s.object).await;
            s.clock.advance(200_000);
            if let Ok(Some(seen)) =
                tokio::time::timeout(Duration::from_millis(300), s.seen.recv()).await
            {
                attempts.push(seen.info.retry_count);
            }
        }
        assert_eq!(attempts, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(stored(&s.object).await, None, "given up: the alarm is gone");
    });
}

#[test]
fn an_alarm_set_inside_the_handler_wins() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    rt().block_on(async {
        let mut s = spawn(&dir, &clock, 0, Some(10 * HOUR));
        s.object
            .call(|ctx| async move { ctx.storage().set_alarm(T0 + HOUR).await })
            .await
            .unwrap()
            .unwrap();
        s.clock.advance(HOUR);
        next(&mut s).await;
        assert_eq!(stored(&s.object).await, Some(T0 + 11 * HOUR));
        s.clock.advance(10 * HOUR);
        let seen = next(&mut s).await;
        assert_eq!(seen.info.scheduled_ms, T0 + 11 * HOUR);
    });
}

#[test]
fn an_alarm_due_while_the_process_was_down_fires_on_restart() {
    let dir = Dir::new();
    let clock = ManualClock::new(T0);
    rt().block_on(async {
        let s = spawn(&dir, &clock, 0, None);
        s.object
            .call(|ctx| async move { ctx.storage().set_alarm(T0 + HOUR).await })
            .await
            .unwrap()
            .unwrap();
        drop(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
        clock.advance(5 * HOUR);
        let mut s = spawn(&dir, &clock, 0, None);
        let seen = next(&mut s).await;
        assert_eq!(seen.info.scheduled_ms, T0 + HOUR);
        assert_eq!(seen.now, T0 + 5 * HOUR);
    });
}
