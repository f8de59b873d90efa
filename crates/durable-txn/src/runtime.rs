//! The object runtime: delivers events to one object's code in turns, commits each turn's
//! writes when it ends, holds results behind the output gate, keeps other events out while
//! the input gate is held, and fires the object's alarm.
//!
//! ```text
//!  event A polled ──► put(k1) ─► exec(INSERT) ─► put(k2) ──► Pending / Ready(result)
//!   │                 └─ first write: BEGIN (implicit transaction)                   │
//!   │                                                                   turn ends ◄──┘
//!   │                         COMMIT ─► sync pool: fsync (group commit; the next turns
//!   │                                   run meanwhile and share the next fsync)
//!   │                                       output gate: wait for earlier commits' syncs
//!   └──────────────────────────────────────────────────► result released to caller
//! ```
//!
//! Storage opened without group commit syncs inside `COMMIT` and its turns end durable.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use tokio::sync::{mpsc, oneshot};

use crate::clock::Sleep;
use crate::error::{Error, Result};
use crate::gate::OutputGate;
use crate::storage::{Storage, TurnEnd};
use crate::turn::{self, ExecShared};

/// An error an object's handler returns.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The message of a critical section (`block_concurrency_while`, `transaction`) that held
/// the input gate longer than the runtime allows: the object is reset.
pub const CRITICAL_SECTION_TIMEOUT_MESSAGE: &str = "A call to blockConcurrencyWhile() in a Durable \
     Object waited for too long. The call was canceled and the Durable Object was reset.";

/// How an object runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectOptions {
    /// How long a critical section (`block_concurrency_while`, an async `transaction`) may
    /// hold the input gate before the object is reset with
    /// [`CRITICAL_SECTION_TIMEOUT_MESSAGE`] (30 s, as the runtime).
    pub critical_section_timeout: std::time::Duration,
}

impl Default for ObjectOptions {
    fn default() -> Self {
        ObjectOptions { critical_section_timeout: std::time::Duration::from_secs(30) }
    }
}

impl ObjectOptions {
    /// Sets [`critical_section_timeout`](ObjectOptions::critical_section_timeout).
    pub fn critical_section_timeout(mut self, timeout: std::time::Duration) -> ObjectOptions {
        self.critical_section_timeout = timeout;
        self
    }
}

/// How many times a failing alarm handler is retried.
pub const ALARM_MAX_RETRIES: u32 = 6;
/// The delay before the first retry of a failed alarm; each later retry waits twice as long.
pub const ALARM_FIRST_RETRY_MS: i64 = 2_000;

/// What the runtime tells an alarm handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmInfo {
    /// The time the alarm was set for, in milliseconds since the epoch.
    pub scheduled_ms: i64,
    /// 0 for the first attempt, then 1, 2, ... for retries.
    pub retry_count: u32,
}

/// An object's code: the state the runtime keeps in memory and the handlers it calls.
///
/// Requests are closures given to [`Object::call`]; the alarm is the one event the runtime
/// starts itself.
pub trait Actor: Send + Sync + 'static {
    /// Handles the object's alarm. An error makes the runtime retry with exponential backoff
    /// (first after about 2 seconds, at most [`ALARM_MAX_RETRIES`] times). The default does
    /// nothing.
    fn alarm(
        self: Arc<Self>,
        ctx: Context<Self>,
        info: AlarmInfo,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send
    where
        Self: Sized,
    {
        let _ = (ctx, info);
        async { Ok(()) }
    }
}

/// What an event's code gets: the object's storage, its in-memory state, and the runtime's
/// controls (`abort`, `block_concurrency_while`).
pub struct Context<A> {
    storage: Storage,
    actor: Arc<A>,
}

impl<A> Clone for Context<A> {
    fn clone(&self) -> Self {
        Context { storage: self.storage.clone(), actor: self.actor.clone() }
    }
}

impl<A> std::fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("storage", &self.storage).finish_non_exhaustive()
    }
}

impl<A> Context<A> {
    /// The object's storage (`ctx.storage`).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The object's in-memory state.
    pub fn actor(&self) -> &Arc<A> {
        &self.actor
    }

    /// Resets the object (`ctx.abort(reason)`): writes not yet committed are discarded,
    /// every event in flight fails with `reason`, and the object starts again from its last
    /// committed state with fresh in-memory state.
    pub fn abort(&self, reason: Option<&str>) {
        self.storage.abort();
        let reason = reason.unwrap_or("Application called abort() to reset Durable Object.");
        turn::request_reset(Error::Aborted(reason.to_string()));
    }

    /// Runs `f` with the input gate held: no other event is delivered to the object until
    /// it finishes, even across real I/O. What the turn wrote before the call is committed
    /// first. If `f` fails, the object resets and the event fails with the error (the code
    /// after the call never runs, as in the runtime); so does a section that holds the gate
    /// longer than the object's
    /// [`critical_section_timeout`](ObjectOptions::critical_section_timeout) (30 s), with
    /// [`CRITICAL_SECTION_TIMEOUT_MESSAGE`]. The `Err` this returns is only the refusal to
    /// start (nested too deeply, storage no longer accessible).
    pub async fn block_concurrency_while<T, E, Fut>(&self, f: Fut) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
        E: From<Error> + std::fmt::Display,
    {
        let lock = turn::critical_section()?;
        self.storage.commit_before_critical_section()?;
        let result = match within_critical_timeout::<_, E>(f).await {
            Ok(result) => result,
            Err(_timed_out) => return reset_pending().await,
        };
        if let Err(e) = &result {
            turn::request_reset(Error::Aborted(e.to_string()));
            return reset_pending().await;
        }
        drop(lock);
        result
    }

    /// Resolves once everything the object wrote before the call is durable: the running
    /// turn ends (awaiting this ends it), its writes commit, and the output gate lets its
    /// results through. Await it before a side effect that must not escape before those
    /// writes are safe (an HTTP request, a message on a channel), as the runtime holds
    /// outgoing messages. Calls to other objects ([`Object::call`] made inside an event)
    /// wait for it by themselves. Fails when a commit failed (the object is being reset).
    pub async fn output_gate(&self) -> Result<()> {
        match turn::output_gate_waiter() {
            Some(rx) => match rx.await {
                Ok(None) => Ok(()),
                Ok(Some(error)) => Err(error),
                // The object was reset before the gate passed.
                Err(_) => Err(Error::NoLongerAccessible),
            },
            None => Ok(()),
        }
    }
}

/// What code waits on once it has asked for its object's reset, inside a turn: nothing
/// (the runtime resets the object after this poll and drops the event; outside the runtime
/// there is no reset to wait for, and this never happens).
pub(crate) async fn reset_pending<T>() -> T {
    std::future::pending().await
}

/// Runs a critical section's future under the running object's timeout: on expiry the
/// object resets and the section fails with [`CRITICAL_SECTION_TIMEOUT_MESSAGE`].
pub(crate) async fn within_critical_timeout<T, E: From<Error>>(
    f: impl Future<Output = T>,
) -> Result<T, E> {
    let Some(limit) = turn::critical_timeout() else { return Ok(f.await) };
    match tokio::time::timeout(limit, f).await {
        Ok(value) => Ok(value),
        Err(_) => {
            let error = Error::CriticalSectionTimedOut;
            turn::request_reset(error.clone());
            Err(E::from(error))
        }
    }
}

type Deliver = Box<dyn FnOnce(Option<Error>) + Send>;

enum Outcome {
    /// A call finished; deliver its result once the output gate allows.
    Call(Deliver),
    /// The alarm handler finished.
    Alarm(Result<(), String>),
}

type EventFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type Start<A> = Box<dyn FnOnce(Context<A>) -> EventFuture + Send>;
type Fail = Box<dyn FnOnce(Error) + Send>;

enum Command<A> {
    Call {
        start: Start<A>,
        fail: Fail,
    },
    /// A flush failed after its turn ended: reset the object (if still the same instance).
    Reset {
        error: Error,
        generation: u64,
    },
}

/// Opens the object's storage (again, after a reset).
pub type Opener = Arc<dyn Fn() -> Result<Storage> + Send + Sync>;

/// A running object: send it events with [`call`](Object::call). Clones share the object;
/// it stops once every clone is dropped and its events have finished.
pub struct Object<A: Actor> {
    tx: mpsc::UnboundedSender<Command<A>>,
}

impl<A: Actor> Clone for Object<A> {
    fn clone(&self) -> Self {
        Object { tx: self.tx.clone() }
    }
}

impl<A: Actor> std::fmt::Debug for Object<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object").field("closed", &self.tx.is_closed()).finish()
    }
}

impl<A: Actor> Object<A> {
    /// Starts an object on the current tokio runtime. `open` opens its storage (it is called
    /// again to start over after a reset); `make` builds its in-memory state.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(
        open: impl Fn() -> Result<Storage> + Send + Sync + 'static,
        make: impl Fn(&Storage) -> A + Send + Sync + 'static,
    ) -> Object<A> {
        Object::spawn_with(open, make, ObjectOptions::default())
    }

    /// [`spawn`](Object::spawn) with options.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_with(
        open: impl Fn() -> Result<Storage> + Send + Sync + 'static,
        make: impl Fn(&Storage) -> A + Send + Sync + 'static,
        options: ObjectOptions,
    ) -> Object<A> {
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Driver {
            rx,
            me: tx.downgrade(),
            generation: 0,
            open: Arc::new(open),
            make: Arc::new(make),
            instance: None,
            events: HashMap::new(),
            next_id: 0,
            gate: OutputGate::new(),
            closed: false,
            closing: None,
            alarm: AlarmState::default(),
            options,
        };
        tokio::spawn(driver);
        Object { tx }
    }

    /// Delivers an event: runs `f` as the object's code, in turns, and returns its result
    /// once every write it depends on is durable. Fails when the object was reset while the
    /// event was in flight (the result is then lost, as the runtime loses it).
    ///
    /// The call is made when `call` is called, not when its future is first polled: the
    /// event is queued at once (a call nobody awaits still runs, as a JavaScript `fetch`
    /// does). Made from inside another object's event, it is an outgoing message: it is
    /// delivered only once the caller's writes made before it are durable (the caller's
    /// output gate), as the runtime holds outgoing requests; if the caller's commit fails or
    /// it is reset first, the message is never delivered and the call fails.
    pub fn call<F, Fut, R>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<R>> + Send + use<A, F, Fut, R>
    where
        F: FnOnce(Context<A>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R>>();
        let slot = Arc::new(Mutex::new(Some(tx)));
        let deliver_slot = slot.clone();
        let start: Start<A> = Box::new(move |ctx| {
            Box::pin(async move {
                let value = f(ctx).await;
                Outcome::Call(Box::new(move |broken: Option<Error>| {
                    if let Some(tx) = take(&deliver_slot) {
                        let _ = tx.send(broken.map_or(Ok(value), Err));
                    }
                }))
            })
        });
        let fail: Fail = Box::new(move |e| {
            if let Some(tx) = take(&slot) {
                let _ = tx.send(Err(e));
            }
        });
        match turn::output_gate_waiter() {
            // A plain call: the event is queued now.
            None => send(&self.tx, start, fail),
            // An outgoing message: queued once the caller's output gate lets it through.
            Some(gate) => {
                let object = self.tx.clone();
                tokio::spawn(async move {
                    match gate.await {
                        Ok(None) => send(&object, start, fail),
                        Ok(Some(error)) => fail(error),
                        Err(_) => fail(Error::NoLongerAccessible),
                    }
                });
            }
        }
        async move { rx.await.unwrap_or(Err(Error::RuntimeStopped)) }
    }
}

/// Queues an event; a stopped runtime fails it.
fn send<A: Actor>(object: &mpsc::UnboundedSender<Command<A>>, start: Start<A>, fail: Fail) {
    if let Err(mpsc::error::SendError(Command::Call { fail, .. })) =
        object.send(Command::Call { start, fail })
    {
        fail(Error::RuntimeStopped);
    }
}

fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

struct Instance<A> {
    storage: Storage,
    actor: Arc<A>,
    exec: Arc<ExecShared>,
}

struct Slot {
    future: EventFuture,
    fail: Option<Fail>,
    waker: Waker,
}

struct EventWaker {
    exec: Arc<ExecShared>,
    id: u64,
}

impl Wake for EventWaker {
    fn wake(self: Arc<Self>) {
        self.exec.wake_event(self.id);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.exec.wake_event(self.id);
    }
}

#[derive(Default)]
struct AlarmState {
    /// The stored alarm the timer is armed for.
    armed: Option<i64>,
    /// When the next attempt is due (the alarm time, or a retry's time).
    due: Option<i64>,
    timer: Option<Sleep>,
    /// The alarm whose handler is running.
    running: Option<i64>,
    retries: u32,
}

struct Driver<A: Actor> {
    rx: mpsc::UnboundedReceiver<Command<A>>,
    /// Lets flush tasks report back without keeping the object alive.
    me: mpsc::WeakUnboundedSender<Command<A>>,
    /// Counts instances, so a late failure resets only the instance it belongs to.
    generation: u64,
    open: Opener,
    make: Arc<dyn Fn(&Storage) -> A + Send + Sync>,
    instance: Option<Instance<A>>,
    events: HashMap<u64, Slot>,
    next_id: u64,
    gate: OutputGate,
    closed: bool,
    /// The last commits becoming durable, once the runtime is closing.
    closing: Option<crate::op::Op<()>>,
    alarm: AlarmState,
    options: ObjectOptions,
}

/// Turns polled before the driver yields to other tasks.
const TURN_BUDGET: usize = 64;

impl<A: Actor> Driver<A> {
    fn instance(&mut self) -> Result<&Instance<A>> {
        if self.instance.is_none() {
            let storage = (self.open)()?;
            let actor = Arc::new((self.make)(&storage));
            let exec = Arc::new(ExecShared::default());
            exec.lock().critical_timeout = Some(self.options.critical_section_timeout);
            self.instance = Some(Instance { storage, actor, exec });
            self.alarm = AlarmState::default();
            self.refresh_alarm();
        }
        Ok(self.instance.as_ref().expect("just opened"))
    }

    fn add_event(&mut self, start: Start<A>, fail: Option<Fail>, waker: &Waker) {
        let ctx = match self.instance() {
            Ok(i) => Context { storage: i.storage.clone(), actor: i.actor.clone() },
            Err(e) => {
                if let Some(fail) = fail {
                    fail(e);
                }
                return;
            }
        };
        let exec = self.instance.as_ref().expect("opened above").exec.clone();
        let id = self.next_id;
        self.next_id += 1;
        let event_waker = Waker::from(Arc::new(EventWaker { exec: exec.clone(), id }));
        self.events.insert(id, Slot { future: start(ctx), fail, waker: event_waker });
        exec.lock().driver = Some(waker.clone());
        exec.wake_event(id);
    }

    /// Fails every event in flight with `error` and drops the object's instance: the next
    /// event opens its storage again and builds fresh in-memory state.
    fn reset(&mut self, error: Error) {
        tracing::warn!(%error, "object reset");
        if let Some(instance) = self.instance.take() {
            instance.storage.abort();
        }
        self.generation += 1;
        for (_, mut slot) in self.events.drain() {
            if let Some(fail) = slot.fail.take() {
                fail(error.clone());
            }
        }
        self.alarm = AlarmState::default();
        self.gate = OutputGate::new();
    }

    /// Arms the alarm timer for the stored alarm, if it changed.
    fn refresh_alarm(&mut self) {
        if self.alarm.running.is_some() {
            return;
        }
        let Some(instance) = &self.instance else { return };
        let stored = instance.storage.stored_alarm().ok().flatten();
        if stored != self.alarm.armed {
            self.alarm.armed = stored;
            self.alarm.retries = 0;
            self.alarm.due = stored;
            let clock = instance.storage.clock();
            self.alarm.timer = stored.map(|t| clock.sleep_until(t));
        }
    }

    fn start_alarm(&mut self, waker: &Waker) {
        let Some(time) = self.alarm.armed else { return };
        let Ok(instance) = self.instance() else { return };
        instance.storage.set_running_alarm(Some(time));
        let info = AlarmInfo { scheduled_ms: time, retry_count: self.alarm.retries };
        self.alarm.running = Some(time);
        let start: Start<A> = Box::new(move |ctx: Context<A>| {
            Box::pin(async move {
                let actor = ctx.actor.clone();
                Outcome::Alarm(actor.alarm(ctx, info).await.map_err(|e| e.to_string()))
            })
        });
        self.add_event(start, None, waker);
    }

    /// The alarm handler finished (inside its last turn, before the commit).
    fn finish_alarm(&mut self, outcome: Result<(), String>) {
        let Some(time) = self.alarm.running.take() else { return };
        let Some(instance) = &self.instance else { return };
        let storage = instance.storage.clone();
        storage.set_running_alarm(None);
        let stored = storage.stored_alarm().ok().flatten();
        let rearmed = stored != Some(time);
        match outcome {
            Ok(()) => {
                if !rearmed {
                    let _ = storage.delete_alarm().now();
                }
                self.alarm.armed = None;
            }
            Err(error) if !rearmed && self.alarm.retries < ALARM_MAX_RETRIES => {
                tracing::warn!(%error, retry = self.alarm.retries + 1, "alarm handler failed");
                let delay = ALARM_FIRST_RETRY_MS << self.alarm.retries;
                self.alarm.retries += 1;
                let clock = storage.clock();
                let at = clock.now_ms().saturating_add(delay);
                self.alarm.due = Some(at);
                self.alarm.timer = Some(clock.sleep_until(at));
                return;
            }
            Err(error) => {
                if !rearmed {
                    tracing::warn!(%error, "alarm handler failed; retries exhausted");
                    let _ = storage.delete_alarm().now();
                }
                self.alarm.armed = None;
            }
        }
        self.alarm.retries = 0;
        self.alarm.timer = None;
        self.alarm.due = None;
    }

    /// Polls the event `id` for one turn, then ends the turn.
    fn run_turn(&mut self, id: u64) {
        let Some(instance) = &self.instance else { return };
        let exec = instance.exec.clone();
        let storage = instance.storage.clone();
        let Some(slot) = self.events.get_mut(&id) else { return };
        let waker = slot.waker.clone();
        let mut cx = TaskContext::from_waker(&waker);
        let polled = turn::enter(&exec, id, || {
            catch_unwind(AssertUnwindSafe(|| slot.future.as_mut().poll(&mut cx)))
        });
        let requested = exec.lock().reset.take();
        let outcome = match polled {
            Ok(Poll::Pending) => None,
            Ok(Poll::Ready(outcome)) => {
                self.events.remove(&id);
                Some(outcome)
            }
            Err(panic) => {
                let message = panic_message(&panic);
                // The failure is an output like any result: it waits behind the output gate.
                let error = Error::Aborted(format!("the object's code panicked: {message}"));
                self.events.remove(&id).and_then(|mut slot| slot.fail.take()).map(|fail| {
                    let deliver: Deliver = Box::new(move |broken| fail(broken.unwrap_or(error)));
                    Outcome::Call(deliver)
                })
            }
        };
        let outcome = match outcome {
            Some(Outcome::Alarm(result)) => {
                if requested.is_none() {
                    self.finish_alarm(result);
                }
                None
            }
            Some(Outcome::Call(deliver)) => Some(deliver),
            None => None,
        };
        if let Some(error) = requested {
            if let Some(deliver) = outcome {
                deliver(Some(error.clone()));
            }
            self.reset(error);
            return;
        }
        // The turn ends: its writes commit.
        let end = match storage.end_turn() {
            // Already durable (a sync that finished at once): nothing to wait for.
            Ok(TurnEnd::Flushing { durable, confirmed }) => match durable.now() {
                Ok(result) => result.map(|()| TurnEnd::Durable),
                Err(durable) => Ok(TurnEnd::Flushing { durable, confirmed }),
            },
            other => other,
        };
        match end {
            Err(error) => {
                if let Some(deliver) = outcome {
                    deliver(Some(error.clone()));
                }
                self.reset(error);
                return;
            }
            Ok(TurnEnd::Durable) => {}
            Ok(TurnEnd::Flushing { durable, confirmed }) => {
                let lock = confirmed.then(|| self.gate.lock());
                let me = self.me.clone();
                let generation = self.generation;
                tokio::spawn(async move {
                    match durable.await {
                        Ok(()) => {
                            if let Some(lock) = lock {
                                lock.complete();
                            }
                        }
                        Err(error) => {
                            // The reset goes into the object's queue before the held results
                            // are released, so a call made on seeing one of them comes after
                            // the reset and runs on the reset object.
                            if let Some(tx) = me.upgrade() {
                                let _ =
                                    tx.send(Command::Reset { error: error.clone(), generation });
                            }
                            if let Some(lock) = lock {
                                lock.fail(error);
                            }
                        }
                    }
                });
            }
        }
        self.refresh_alarm();
        // Code that waits for the output gate (outgoing calls, `Context::output_gate`) is
        // let through exactly as results are.
        let waiters = std::mem::take(&mut exec.lock().gate_waiters);
        for waiter in waiters {
            self.release(Box::new(move |broken| {
                let _ = waiter.send(broken);
            }));
        }
        if let Some(deliver) = outcome {
            self.release(deliver);
        }
    }

    /// Hands `deliver` what the output gate says once every commit made so far is durable.
    fn release(&self, deliver: Deliver) {
        if self.gate.is_idle() {
            deliver(self.gate.broken());
        } else {
            let wait = self.gate.wait();
            tokio::spawn(async move { deliver(wait.await.err()) });
        }
    }

    fn next_ready(&self) -> Option<u64> {
        let instance = self.instance.as_ref()?;
        let mut s = instance.exec.lock();
        match s.holder {
            Some(holder) => {
                let pos = s.ready.iter().position(|&id| id == holder)?;
                s.ready.remove(pos)
            }
            None => s.ready.pop_front(),
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

impl<A: Actor> Future for Driver<A> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(instance) = &this.instance {
            instance.exec.lock().driver = Some(cx.waker().clone());
        }
        while !this.closed {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Command::Call { start, fail })) => {
                    this.add_event(start, Some(fail), cx.waker());
                }
                Poll::Ready(Some(Command::Reset { error, generation })) => {
                    if generation == this.generation {
                        this.reset(error);
                    }
                }
                Poll::Ready(None) => this.closed = true,
                Poll::Pending => break,
            }
        }
        if this.instance.is_none() && !this.closed {
            // Open at once so that a due alarm fires even before the first call.
            let _ = this.instance();
        }
        if let Some(instance) = &this.instance {
            instance.exec.lock().driver = Some(cx.waker().clone());
        }
        let mut budget = TURN_BUDGET;
        loop {
            // A closed object starts no alarm: the alarm stays stored and fires in the
            // object's next instance.
            if !this.closed
                && this.alarm.running.is_none()
                && let Some(timer) = this.alarm.timer.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                this.alarm.timer = None;
                this.start_alarm(cx.waker());
            }
            let Some(id) = this.next_ready() else { break };
            this.run_turn(id);
            budget -= 1;
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        if this.closed && this.events.is_empty() {
            // The last commit, then every commit made durable, awaited here rather than in
            // the storage's drop: a flush in flight may need this very thread to finish.
            if this.closing.is_none()
                && let Some(instance) = &this.instance
            {
                let storage = instance.storage.clone();
                let last = storage.end_turn();
                this.closing = Some(crate::op::Op::io(async move {
                    if let TurnEnd::Flushing { durable, .. } = last? {
                        durable.await?;
                    }
                    storage.sync().await
                }));
            }
            if let Some(closing) = this.closing.as_mut() {
                match Pin::new(closing).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(error)) => tracing::warn!(%error, "final commit failed"),
                    Poll::Ready(Ok(())) => {}
                }
            }
            this.instance = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
