//! `ObjectHandle::try_call`: an event whose handler returns a `Result`, with the handler's
//! error and the object's own (a reset, a stopped runtime) coming back as one [`Error`](crate::Error).

use durable_txn::{Actor, Context};

use crate::error::Result;
use crate::namespace::ObjectHandle;

impl<A: Actor> ObjectHandle<A> {
    /// [`Object::call`](durable_txn::Object::call) for a handler that returns
    /// `Result<T, durable_storage::Error>`, flattened: the handler's error and the event's
    /// (the object was reset while the event ran, its runtime stopped) both come back as
    /// the one [`Error`](crate::Error), so the result needs one `?` instead of `call(..).await??`. Inside
    /// the handler `?` works on every storage call (SQL, sync and async KV, alarms, PITR),
    /// since each layer's error converts into [`Error`](crate::Error); the handler's own failures go
    /// through [`Error::other`](crate::Error::other). Everything else is as `call`: the event is queued when
    /// `try_call` is called, and its result waits for the writes it depends on to be
    /// durable.
    ///
    /// ```
    /// use durable_storage::{Actor, Error, Namespace, NamespaceOptions};
    ///
    /// struct Room;
    /// impl Actor for Room {}
    ///
    /// # let dir = tempfile::tempdir()?;
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// let ns = Namespace::open(dir.path(), NamespaceOptions::default())?;
    /// let room = ns.object("lobby", |_| Room)?;
    /// let posts: i64 = room
    ///     .try_call(|ctx| async move {
    ///         let sql = ctx.storage().sql()?;                         // durable_txn::Error
    ///         sql.exec("CREATE TABLE IF NOT EXISTS posts(body TEXT)", &[])?; // durable_sql::Error
    ///         sql.exec("INSERT INTO posts VALUES ('hello')", &[])?;
    ///         ctx.storage().kv()?.put("last", "hello")?;              // durable_kv::Error
    ///         ctx.storage().set_alarm(std::time::SystemTime::now()).await?;
    ///         let posts: i64 = sql.exec("SELECT count(*) FROM posts", &[])?.one()?;
    ///         if posts > 1_000 {
    ///             return Err(Error::other("the room is full"));
    ///         }
    ///         Ok(posts)
    ///     })
    ///     .await?;
    /// assert_eq!(posts, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_call<F, Fut, T>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<T>> + Send + use<A, F, Fut, T>
    where
        F: FnOnce(Context<A>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let event = self.object().call(f);
        async move { event.await? }
    }
}
