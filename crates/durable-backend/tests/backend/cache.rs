//! The write-behind cache: reads without I/O, call-time snapshots, one atomic batch per flush,
//! list merging and known ranges, `no_cache`, LRU eviction, failures, `delete_all`, limits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use durable_backend::cache::{
    CacheOptions, Deleted, ListLookup, Lookup, ReadOptions, WriteBehindCache, WriteOptions,
};
use durable_backend::{Error, FaultyBackend, KvBackend, MemoryBackend, Op, WriteBatch};
use durable_kv::{KvLimits, ListOptions};

use crate::support::{count, faulty, hold, keys, v};

const W: WriteOptions = WriteOptions { allow_unconfirmed: false, no_cache: false };
const R: ReadOptions = ReadOptions { no_cache: false };

fn cache() -> WriteBehindCache {
    WriteBehindCache::default()
}

fn ready(lookup: Lookup) -> Vec<Option<Vec<u8>>> {
    match lookup {
        Lookup::Ready(values) => values,
        Lookup::Pending(p) => {
            panic!("expected an answer from the cache, must read {:?}", p.missing())
        }
    }
}

fn list_ready(lookup: ListLookup) -> Vec<String> {
    match lookup {
        ListLookup::Ready(entries) => entries.into_iter().map(|(k, _)| k).collect(),
        ListLookup::Pending(p) => {
            panic!("expected a list from the cache, must list {:?}", p.storage_range())
        }
    }
}

fn prefix(p: &str) -> ListOptions {
    ListOptions::new().prefix(p)
}

fn names(entries: &[(String, Vec<u8>)]) -> Vec<&str> {
    entries.iter().map(|(k, _)| k.as_str()).collect()
}

async fn seed(b: &dyn KvBackend, entries: &[(&str, &str)]) {
    let puts = entries.iter().map(|(k, x)| ((*k).to_owned(), v(x))).collect();
    b.write(WriteBatch { puts, ..WriteBatch::default() }).await.unwrap();
}

// Case 20: read-your-writes, without I/O.
#[tokio::test]
async fn reads_of_cached_entries_need_no_io() {
    let b = faulty();
    let gate = hold(&b, &[Op::Get, Op::List]); // any backend read would hang
    let c = cache();
    c.put("k", v("1"), W).unwrap();
    let _ = c.delete(&keys(&["gone"]), W).unwrap();
    assert_eq!(ready(c.lookup(&keys(&["k"]), R).unwrap()), vec![Some(v("1"))]);
    let got = c.get(&*b, &keys(&["k", "k"]), R).await.unwrap();
    assert_eq!(got, vec![Some(v("1")), Some(v("1"))]);
    assert!(b.calls().iter().all(|c| c.op != Op::Get), "no backend read");
    drop(gate);
}

#[tokio::test]
async fn a_miss_reads_the_backend_once_and_the_answer_is_kept() {
    let b = faulty();
    seed(&*b, &[("a", "1")]).await;
    b.take_calls();
    let c = cache();
    let Lookup::Pending(pending) = c.lookup(&keys(&["a", "x", "a"]), R).unwrap() else {
        panic!("a cold cache must read")
    };
    assert_eq!(pending.missing(), keys(&["a", "x"]), "each missing key once");
    assert_eq!(pending.fetch(&*b).await.unwrap(), vec![Some(v("1")), None, Some(v("1"))]);
    assert_eq!(count(&b.take_calls(), Op::Get), 1);
    // Present and absent answers are both remembered.
    assert_eq!(ready(c.lookup(&keys(&["x", "a"]), R).unwrap()), vec![None, Some(v("1"))]);
}

#[tokio::test]
async fn misses_are_read_in_calls_of_at_most_the_backend_limit() {
    let b = Arc::new(FaultyBackend::new(MemoryBackend::new()).with_max_keys_per_call(50));
    let c = cache();
    let many: Vec<String> = (0..128).map(|i| format!("k{i:03}")).collect();
    let got = c.get(&*b, &many, R).await.unwrap();
    assert_eq!(got.len(), 128);
    let gets: Vec<usize> = b.calls().iter().map(|c| c.keys.len()).collect();
    assert_eq!(gets, [50, 50, 28]);
}

// Case 21 and spec 2.8 item 7: a read answers with the state at its call.
#[tokio::test]
async fn reads_see_the_state_at_their_call() {
    let b = faulty();
    seed(&*b, &[("o", "1")]).await;
    let c = cache();
    let Lookup::Pending(get) = c.lookup(&keys(&["o"]), R).unwrap() else { panic!("cold") };
    let ListLookup::Pending(list) = c.lookup_list(&prefix("o"), R).unwrap() else { panic!("cold") };
    c.put("o", v("2"), W).unwrap();
    c.put("o2", v("3"), W).unwrap();
    assert_eq!(get.fetch(&*b).await.unwrap(), vec![Some(v("1"))]);
    let listed = list.fetch(&*b).await.unwrap();
    assert_eq!(listed, vec![("o".to_owned(), v("1"))]);
    assert_eq!(ready(c.lookup(&keys(&["o"]), R).unwrap()), vec![Some(v("2"))]);
    assert_eq!(
        names(&c.list(&*b, &prefix("o"), R).await.unwrap()),
        ["o", "o2"],
        "the stale answers did not replace the newer writes"
    );
}

// Case 35: a flush does not start before the reads that were pending when it was taken.
#[tokio::test]
async fn a_flush_waits_for_the_reads_pending_when_it_was_taken() {
    let b = faulty();
    seed(&*b, &[("o", "1")]).await;
    b.take_calls();
    let gate = hold(&b, &[Op::Get]);
    let c = cache();
    let Lookup::Pending(get) = c.lookup(&keys(&["o"]), R).unwrap() else { panic!("cold") };
    let reader = {
        let b = b.clone();
        tokio::spawn(async move { get.fetch(&*b).await })
    };
    c.put("o", v("2"), W).unwrap();
    let flush = c.take_flush().unwrap().expect("a write is pending");
    let flusher = {
        let b = b.clone();
        tokio::spawn(async move { flush.run(&*b).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(count(&b.calls(), Op::Write), 0, "the flush waits for the read");
    assert_eq!(b.inner().entries(), vec![("o".to_owned(), v("1"))]);
    gate.add_permits(1);
    assert_eq!(reader.await.unwrap().unwrap(), vec![Some(v("1"))], "the read saw the old value");
    flusher.await.unwrap().unwrap();
    assert_eq!(b.inner().entries(), vec![("o".to_owned(), v("2"))]);
}

#[tokio::test]
async fn a_dropped_read_does_not_hold_flushes() {
    let b = faulty();
    let c = cache();
    let pending = c.lookup(&keys(&["x"]), R).unwrap();
    c.put("y", v("1"), W).unwrap();
    drop(pending);
    tokio::time::timeout(Duration::from_secs(5), c.flush(&*b)).await.unwrap().unwrap();
    assert_eq!(b.inner().len(), 1);
}

// Case 30: every write of a turn goes out as one batch, sent only at the flush.
#[tokio::test]
async fn the_writes_pending_at_a_flush_go_out_as_one_atomic_batch() {
    let b = faulty();
    seed(&*b, &[("c", "old")]).await;
    let c = cache();
    c.get(&*b, &keys(&["c"]), R).await.unwrap();
    b.take_calls();
    c.put("a", v("1"), W).unwrap();
    c.put_multiple(vec![("b".into(), v("2")), ("e".into(), v("5"))], W).unwrap();
    assert!(matches!(c.delete(&keys(&["c"]), W).unwrap(), Deleted::Known(1)));
    assert!(b.calls().is_empty(), "nothing is sent before the flush");
    assert!(c.has_pending());
    let flush = c.take_flush().unwrap().unwrap();
    assert_eq!(flush.batch().deletes, keys(&["c"]));
    assert_eq!(
        flush.batch().puts.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["a", "b", "e"]
    );
    let report = flush.run(&*b).await.unwrap();
    assert_eq!((report.puts, report.deletes, report.delete_all), (3, 1, false));
    let calls = b.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].op, Op::Write);
    assert!(!c.has_pending());
    assert_eq!(c.stats().dirty, 0);
}

// Case 5: a batch over the per-call limit is still one atomic write.
#[tokio::test]
async fn a_batch_larger_than_the_backend_call_limit_is_still_one_write() {
    let b = Arc::new(FaultyBackend::new(MemoryBackend::new()).with_max_keys_per_call(128));
    let c = cache();
    for part in 0..3 {
        let entries = (0..100).map(|i| (format!("k{part}{i:02}"), v("x"))).collect();
        c.put_multiple(entries, W).unwrap();
    }
    c.flush(&*b).await.unwrap();
    let calls = b.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].keys.len(), 300);
    assert_eq!(b.inner().len(), 300);
}

// Case 33: redundant writes send nothing.
#[tokio::test]
async fn writes_that_change_nothing_are_dropped() {
    let b = faulty();
    seed(&*b, &[("k", "v")]).await;
    let c = cache();
    c.get(&*b, &keys(&["k", "absent"]), R).await.unwrap();
    c.put("k", v("v"), W).unwrap();
    assert!(matches!(c.delete(&keys(&["absent", "absent"]), W).unwrap(), Deleted::Known(0)));
    assert!(!c.has_pending());
    assert!(c.take_flush().unwrap().is_none());
    c.put("k", v("w"), W).unwrap();
    assert!(c.has_pending());
}

// Case 16: delete counts, known from the cache or read as of the call.
#[tokio::test]
async fn delete_counts_what_existed_at_the_call() {
    let b = faulty();
    seed(&*b, &[("a", "1"), ("b", "2"), ("c", "3")]).await;
    let c = cache();
    c.get(&*b, &keys(&["a"]), R).await.unwrap();
    let Deleted::Pending(count) = c.delete(&keys(&["a", "zzz", "b", "b"]), W).unwrap() else {
        panic!("b and zzz are unknown to the cache")
    };
    // The delete has happened already.
    assert_eq!(ready(c.lookup(&keys(&["a", "b"]), R).unwrap()), vec![None, None]);
    assert_eq!(count.fetch(&*b).await.unwrap(), 2);
    c.flush(&*b).await.unwrap();
    assert_eq!(b.inner().entries(), vec![("c".to_owned(), v("3"))]);
    let Deleted::Pending(count) = c.delete(&keys(&["c"]), W).unwrap() else { panic!("unknown") };
    c.put("c", v("again"), W).unwrap();
    assert_eq!(count.fetch(&*b).await.unwrap(), 1, "a later put does not change the count");
    assert!(matches!(c.delete(&keys(&["c"]), W).unwrap(), Deleted::Known(1)));
    assert!(matches!(c.delete(&keys(&["c"]), W).unwrap(), Deleted::Known(0)));
}

// Case 34: writes made during a flush go into the next one.
#[tokio::test]
async fn writes_made_during_a_flush_go_into_the_next_one() {
    let b = faulty();
    let c = cache();
    c.put("a", v("1"), W).unwrap();
    let first = c.take_flush().unwrap().unwrap();
    c.put("b", v("2"), W).unwrap();
    c.put("a", v("2"), W).unwrap();
    assert!(c.is_flushing());
    assert!(c.take_flush().unwrap().is_none(), "one flush at a time");
    first.run(&*b).await.unwrap();
    let second = c.take_flush().unwrap().unwrap();
    assert_eq!(second.batch().puts, vec![("a".to_owned(), v("2")), ("b".to_owned(), v("2"))]);
    second.run(&*b).await.unwrap();
    assert_eq!(b.inner().entries(), vec![("a".to_owned(), v("2")), ("b".to_owned(), v("2"))]);
}

#[tokio::test]
async fn a_dropped_flush_returns_its_writes_to_the_pending_set() {
    let b = faulty();
    let c = cache();
    c.put("a", v("1"), WriteOptions { allow_unconfirmed: true, no_cache: false }).unwrap();
    c.delete_all(W).unwrap();
    c.put("b", v("2"), W).unwrap();
    let flush = c.take_flush().unwrap().unwrap();
    assert!(!c.has_pending());
    drop(flush);
    assert!(c.has_pending() && !c.is_flushing());
    c.put("c", v("3"), W).unwrap();
    let flush = c.take_flush().unwrap().unwrap();
    assert!(flush.batch().delete_all && flush.confirmed());
    assert_eq!(flush.batch().puts.len(), 2);
    flush.run(&*b).await.unwrap();
    assert_eq!(b.inner().len(), 2);
}

// Cases 42 and 43: the batch holds the output gate unless every write in it was unconfirmed.
#[tokio::test]
async fn a_batch_is_confirmed_unless_every_write_was_unconfirmed() {
    let c = cache();
    let unconfirmed = WriteOptions { allow_unconfirmed: true, no_cache: false };
    c.put("a", v("1"), unconfirmed).unwrap();
    let flush = c.take_flush().unwrap().unwrap();
    assert!(!flush.confirmed());
    flush.run(&MemoryBackend::new()).await.unwrap();
    c.put("b", v("1"), unconfirmed).unwrap();
    c.put("c", v("1"), W).unwrap();
    assert!(c.take_flush().unwrap().unwrap().confirmed(), "one confirmed write upgrades the batch");
}

// Case 14 (with pending writes): list merges the cache over the backend.
#[tokio::test]
async fn list_merges_pending_writes_and_deletes_with_the_backend() {
    let b = faulty();
    seed(&*b, &[("a", "1"), ("b", "2"), ("c", "3"), ("e", "5")]).await;
    let c = cache();
    c.put("d", v("4"), W).unwrap();
    c.put("a", v("new"), W).unwrap();
    let _ = c.delete(&keys(&["b"]), W).unwrap();
    let all = c.list(&*b, &ListOptions::default(), R).await.unwrap();
    assert_eq!(names(&all), ["a", "c", "d", "e"]);
    assert_eq!(all[0].1, v("new"), "the cache wins");
    let limited = ListOptions::new().limit(2);
    assert_eq!(names(&c.list(&*b, &limited, R).await.unwrap()), ["a", "c"]);
    let reversed = ListOptions::new().limit(3).reverse(true);
    assert_eq!(names(&c.list(&*b, &reversed, R).await.unwrap()), ["e", "d", "c"]);
}

// Case 58: a listed range is known, so reads inside it need no I/O; its end is not.
#[tokio::test]
async fn a_listed_range_is_remembered_as_complete() {
    let b = faulty();
    seed(&*b, &[("bar", "1"), ("baz", "2"), ("foo", "3"), ("qux", "4")]).await;
    let c = cache();
    let range = ListOptions::new().start("bar").end("qux");
    assert_eq!(names(&c.list(&*b, &range, R).await.unwrap()), ["bar", "baz", "foo"]);
    b.take_calls();
    assert_eq!(ready(c.lookup(&keys(&["corge"]), R).unwrap()), vec![None], "known absent");
    assert!(matches!(c.lookup(&keys(&["qux"]), R).unwrap(), Lookup::Pending(_)), "exclusive end");
    assert_eq!(list_ready(c.lookup_list(&range, R).unwrap()), ["bar", "baz", "foo"]);
    let reverse = range.clone().reverse(true).limit(2);
    assert_eq!(list_ready(c.lookup_list(&reverse, R).unwrap()), ["foo", "baz"]);
    let inner = ListOptions::new().start("bas").end("fop");
    assert_eq!(list_ready(c.lookup_list(&inner, R).unwrap()), ["baz", "foo"]);
    assert!(b.calls().is_empty());
}

// Case 59: after a limited list only the listed part is known; the next list continues there.
#[tokio::test]
async fn a_limited_list_knows_only_what_it_returned() {
    let b = faulty();
    seed(&*b, &[("bar", "1"), ("baz", "2"), ("foo", "3"), ("grault", "4"), ("qux", "5")]).await;
    let c = cache();
    let mut range = ListOptions::new().start("bar").end("qux").limit(3);
    assert_eq!(names(&c.list(&*b, &range, R).await.unwrap()), ["bar", "baz", "foo"]);
    b.take_calls();
    range.limit = Some(4);
    let ListLookup::Pending(pending) = c.lookup_list(&range, R).unwrap() else {
        panic!("unknown tail")
    };
    assert_eq!(pending.storage_range().start, b"foo\0");
    assert_eq!(pending.storage_range().limit, Some(1));
    assert_eq!(names(&pending.fetch(&*b).await.unwrap()), ["bar", "baz", "foo", "grault"]);
    assert_eq!(b.take_calls().len(), 1);
}

#[tokio::test]
async fn a_reverse_list_continues_below_what_it_knows() {
    let b = faulty();
    seed(&*b, &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]).await;
    let c = cache();
    let mut opts = ListOptions::new().reverse(true).limit(2);
    assert_eq!(names(&c.list(&*b, &opts, R).await.unwrap()), ["d", "c"]);
    let _ = c.delete(&keys(&["b"]), W).unwrap();
    opts.limit = Some(3);
    let ListLookup::Pending(pending) = c.lookup_list(&opts, R).unwrap() else { panic!("unknown") };
    assert_eq!(pending.storage_range().end.as_deref(), Some(&b"c"[..]));
    assert_eq!(pending.storage_range().limit, Some(2), "one wanted plus one cached delete");
    assert_eq!(names(&pending.fetch(&*b).await.unwrap()), ["d", "c", "a"]);
    let from_a = ListOptions::new().start("a");
    assert_eq!(list_ready(c.lookup_list(&from_a, R).unwrap()), ["a", "c", "d"], "all known now");
}

// Case 60: no_cache reads leave nothing behind; no_cache writes leave after their flush.
#[tokio::test]
async fn no_cache_keeps_entries_out_of_the_cache() {
    let b = faulty();
    seed(&*b, &[("k", "1")]).await;
    b.take_calls();
    let c = cache();
    let nc = ReadOptions { no_cache: true };
    assert_eq!(c.get(&*b, &keys(&["k"]), nc).await.unwrap(), vec![Some(v("1"))]);
    assert_eq!(c.get(&*b, &keys(&["k"]), nc).await.unwrap(), vec![Some(v("1"))]);
    assert_eq!(count(&b.take_calls(), Op::Get), 2);
    assert_eq!(names(&c.list(&*b, &ListOptions::default(), nc).await.unwrap()), ["k"]);
    assert!(matches!(c.lookup_list(&ListOptions::default(), R).unwrap(), ListLookup::Pending(_)));
    let put_nc = WriteOptions { allow_unconfirmed: false, no_cache: true };
    c.put("n", v("2"), put_nc).unwrap();
    assert_eq!(
        ready(c.lookup(&keys(&["n"]), nc).unwrap()),
        vec![Some(v("2"))],
        "cached while dirty"
    );
    c.flush(&*b).await.unwrap();
    assert!(matches!(c.lookup(&keys(&["n"]), R).unwrap(), Lookup::Pending(_)), "dropped after");
    // A normal read of a dirty no_cache entry keeps it after all.
    c.put("m", v("3"), put_nc).unwrap();
    assert_eq!(ready(c.lookup(&keys(&["m"]), R).unwrap()), vec![Some(v("3"))]);
    c.flush(&*b).await.unwrap();
    assert_eq!(ready(c.lookup(&keys(&["m"]), R).unwrap()), vec![Some(v("3"))]);
}

// Case 61: over the memory bound, clean entries go least recently used first; dirty ones stay.
#[tokio::test]
async fn the_memory_bound_evicts_clean_entries_least_recently_used_first() {
    let b = faulty();
    seed(&*b, &[("foo", "1"), ("bar", "2"), ("baz", "3")]).await;
    let one_entry = 3 + 1 + durable_backend::cache::ENTRY_OVERHEAD;
    let c = WriteBehindCache::new(CacheOptions {
        memory_limit: 2 * one_entry,
        ..CacheOptions::default()
    });
    c.get(&*b, &keys(&["foo"]), R).await.unwrap();
    c.get(&*b, &keys(&["bar"]), R).await.unwrap();
    ready(c.lookup(&keys(&["foo"]), R).unwrap()); // foo is now the most recently used
    c.get(&*b, &keys(&["baz"]), R).await.unwrap();
    assert!(matches!(c.lookup(&keys(&["bar"]), R).unwrap(), Lookup::Pending(_)), "bar evicted");
    ready(c.lookup(&keys(&["foo", "baz"]), R).unwrap());
    assert!(c.stats().bytes <= 2 * one_entry);
    // Dirty entries are never evicted, even far over the bound.
    for i in 0..10 {
        c.put(&format!("d{i:02}"), v("x"), W).unwrap();
    }
    assert_eq!(c.stats().dirty, 10);
    assert!(c.stats().bytes > 2 * one_entry);
    let all: Vec<String> = (0..10).map(|i| format!("d{i:02}")).collect();
    assert_eq!(ready(c.lookup(&all, R).unwrap()).len(), 10);
    c.flush(&*b).await.unwrap();
    assert!(c.stats().bytes <= 2 * one_entry, "clean after the flush, so evictable");
}

#[tokio::test]
async fn an_evicted_key_inside_a_listed_range_is_read_again() {
    let b = faulty();
    seed(&*b, &[("a", "1"), ("b", "2"), ("c", "3")]).await;
    let one_entry = 2 + ENTRY;
    let c = WriteBehindCache::new(CacheOptions {
        memory_limit: 3 * one_entry,
        ..CacheOptions::default()
    });
    let upto_d = ListOptions::new().end("d");
    c.list(&*b, &upto_d, R).await.unwrap();
    assert_eq!(ready(c.lookup(&keys(&["b\0"]), R).unwrap()), vec![None], "known absent");
    c.get(&*b, &keys(&["zz"]), R).await.unwrap(); // evicts "a", the least recently used
    assert!(matches!(c.lookup(&keys(&["a"]), R).unwrap(), Lookup::Pending(_)));
    assert_eq!(names(&c.list(&*b, &upto_d, R).await.unwrap()), ["a", "b", "c"]);
}

const ENTRY: usize = durable_backend::cache::ENTRY_OVERHEAD;

// Case 37: a failed flush breaks the cache until it is reset.
#[tokio::test]
async fn a_failed_flush_breaks_the_cache_until_reset() {
    let b = faulty();
    let c = cache();
    c.put("a", v("1"), W).unwrap();
    b.fail_next(1);
    let err = c.flush(&*b).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "Internal error in Durable Object storage write caused object to be reset; reference = "
        ),
        "{text}"
    );
    assert!(
        matches!(&err, Error::FlushFailed { source, .. } if matches!(**source, Error::Injected { .. }))
    );
    assert_eq!(c.broken(), Some(err));
    let broken = c.put("b", v("2"), W).unwrap_err();
    assert_eq!(broken.to_string(), "Durable Object storage is no longer accessible.");
    assert!(matches!(c.lookup(&keys(&["a"]), R), Err(Error::Broken)));
    assert!(matches!(c.take_flush(), Err(Error::Broken)));
    assert!(b.inner().is_empty());
    c.reset();
    assert!(c.broken().is_none() && !c.has_pending());
    assert!(matches!(c.lookup(&keys(&["a"]), R).unwrap(), Lookup::Pending(_)), "nothing cached");
    c.put("b", v("2"), W).unwrap();
    c.flush(&*b).await.unwrap();
    assert_eq!(b.inner().entries(), vec![("b".to_owned(), v("2"))]);
}

#[tokio::test]
async fn a_read_failure_fails_only_that_read() {
    let b = faulty();
    let c = cache();
    b.fail_next(1);
    assert!(c.get(&*b, &keys(&["a"]), R).await.is_err());
    assert!(c.broken().is_none());
    assert_eq!(c.get(&*b, &keys(&["a"]), R).await.unwrap(), vec![None]);
}

#[tokio::test]
async fn a_backend_crash_breaks_the_flush_that_meets_it() {
    let b = faulty();
    b.crash_after_batches(1);
    let c = cache();
    c.put("a", v("1"), W).unwrap();
    c.flush(&*b).await.unwrap();
    c.put("b", v("2"), W).unwrap();
    assert!(matches!(c.flush(&*b).await, Err(Error::FlushFailed { .. })));
    assert_eq!(b.inner().entries(), vec![("a".to_owned(), v("1"))]);
}

// Case 54: writes before a delete_all are erased, writes after it survive.
#[tokio::test]
async fn delete_all_is_ordered_with_the_writes_around_it() {
    let b = faulty();
    seed(&*b, &[("old", "0")]).await;
    b.take_calls();
    let c = cache();
    c.put("dz1", v("1"), W).unwrap();
    c.delete_all(W).unwrap();
    c.put("dz2", v("2"), W).unwrap();
    assert_eq!(list_ready(c.lookup_list(&ListOptions::default(), R).unwrap()), ["dz2"]);
    assert_eq!(ready(c.lookup(&keys(&["old", "dz1"]), R).unwrap()), vec![None, None]);
    let flush = c.take_flush().unwrap().unwrap();
    assert!(flush.batch().delete_all);
    assert_eq!(flush.batch().puts, vec![("dz2".to_owned(), v("2"))]);
    flush.run(&*b).await.unwrap();
    assert_eq!(b.inner().entries(), vec![("dz2".to_owned(), v("2"))]);
    assert_eq!(b.take_calls().len(), 1, "one atomic batch");
}

#[tokio::test]
async fn delete_all_during_a_flush_follows_it() {
    let b = faulty();
    let c = cache();
    c.put("x", v("1"), W).unwrap();
    let first = c.take_flush().unwrap().unwrap();
    c.delete_all(W).unwrap();
    c.put("y", v("2"), W).unwrap();
    first.run(&*b).await.unwrap();
    assert_eq!(b.inner().len(), 1);
    let second = c.take_flush().unwrap().unwrap();
    assert!(second.batch().delete_all);
    second.run(&*b).await.unwrap();
    assert_eq!(b.inner().entries(), vec![("y".to_owned(), v("2"))]);
    assert_eq!(ready(c.lookup(&keys(&["x", "y"]), R).unwrap()), vec![None, Some(v("2"))]);
}

#[tokio::test]
async fn a_failed_delete_all_says_so() {
    let b = faulty();
    let c = cache();
    c.delete_all(W).unwrap();
    b.fail_next(1);
    let err = c.flush(&*b).await.unwrap_err();
    assert!(
        err.to_string().starts_with(
            "Internal error in Durable Object storage deleteAll() caused object to be reset; \
             reference = "
        ),
        "{err}"
    );
}

// Cases 1 to 4: the legacy limits, refused before anything changes.
#[tokio::test]
async fn the_legacy_limits_are_refused_with_the_runtime_messages() {
    let c = cache();
    let long = "k".repeat(2049);
    let err = c.put(&long, v("x"), W).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Keys cannot be larger than 2048 bytes. A key of size 2049 was provided."
    );
    assert_eq!(err.js_name(), "RangeError");
    assert!(c.lookup(std::slice::from_ref(&long), R).is_err());
    assert!(c.delete(&[long], W).is_err());
    c.put(&"k".repeat(2048), v("x"), W).unwrap();
    // Values are measured as the runtime measures them: a Uint8Array's V8 serialization is
    // its length plus 13 bytes, and 34 bytes of slack are allowed.
    let bytes =
        |n: usize| durable_kv::codec::encode(&durable_kv::Value::Bytes(vec![0; n])).unwrap();
    let err = c.put("v", bytes(131_094), W).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Values cannot be larger than 131072 bytes. A value of size 131107 was provided."
    );
    c.put("v", bytes(131_093), W).unwrap();
    let many: Vec<String> = (0..129).map(|i| format!("k{i}")).collect();
    let err = c.lookup(&many, R).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Maximum number of key value pairs is 128. 129 pairs were provided."
    );
    assert!(c.lookup(&many[..128], R).is_ok());
    let entries: Vec<(String, Vec<u8>)> = many.iter().map(|k| (k.clone(), v("x"))).collect();
    assert!(c.put_multiple(entries, W).is_err());
    assert!(c.delete(&many, W).is_err());
    // A multi-key put with one bad value writes none of its entries.
    let err =
        c.put_multiple(vec![("ok".into(), v("1")), ("bad".into(), bytes(200_000))], W).unwrap_err();
    assert!(matches!(err, Error::Kv(durable_kv::Error::ValueTooLarge { size: 200_013, .. })));
    assert_eq!(c.stats().dirty, 2, "only the two accepted puts are pending");
    // Other limits can be configured.
    let open =
        WriteBehindCache::new(CacheOptions { limits: KvLimits::SQLITE, ..CacheOptions::default() });
    open.put("v", vec![0; 200_000], W).unwrap();
}

#[tokio::test]
async fn list_options_are_checked_as_the_runtime_checks_them() {
    let c = cache();
    let both = ListOptions::new().start("a").start_after("b");
    assert_eq!(
        c.lookup_list(&both, R).unwrap_err().to_string(),
        "list() cannot be called with both start and startAfter values."
    );
    let zero = ListOptions::new().limit(0);
    assert_eq!(c.lookup_list(&zero, R).unwrap_err().to_string(), "List limit must be positive.");
    let empty = ListOptions::new().start("c").end("a");
    assert!(list_ready(c.lookup_list(&empty, R).unwrap()).is_empty());
}

#[tokio::test]
async fn reset_drops_every_entry_and_pending_write() {
    let b = faulty();
    let c = cache();
    c.put("a", v("1"), W).unwrap();
    c.delete_all(W).unwrap();
    c.reset();
    assert!(!c.has_pending());
    assert_eq!(c.stats(), Default::default());
    assert!(c.take_flush().unwrap().is_none());
    assert!(matches!(c.lookup(&keys(&["a"]), R).unwrap(), Lookup::Pending(_)));
    assert!(b.inner().is_empty());
}

/// A small deterministic generator (xorshift), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn key(&mut self) -> String {
        const PARTS: [&str; 5] = ["a", "b", "\u{0}", "é", "c"];
        let len = self.next(3) + 1;
        (0..len).map(|_| PARTS[self.next(PARTS.len() as u64) as usize]).collect()
    }
}

/// Random reads, writes, flushes and evictions through the cache answer as a plain map does.
#[tokio::test]
async fn random_operations_through_the_cache_match_a_model() {
    for (seed, memory_limit) in [(1u64, 16 << 20), (7, 600), (99, 300)] {
        let b = faulty();
        let c = WriteBehindCache::new(CacheOptions { memory_limit, ..CacheOptions::default() });
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ seed);
        for step in 0..600u32 {
            let ctx = format!("seed {seed} step {step}");
            match rng.next(12) {
                0..=2 => {
                    let k = rng.key();
                    let value = step.to_le_bytes().to_vec();
                    let no_cache = rng.next(4) == 0;
                    c.put(&k, value.clone(), WriteOptions { allow_unconfirmed: false, no_cache })
                        .unwrap();
                    model.insert(k, value);
                }
                3 => {
                    let ks: Vec<String> = (0..rng.next(3) + 1).map(|_| rng.key()).collect();
                    let mut unique = ks.clone();
                    unique.sort();
                    unique.dedup();
                    let expected = unique.iter().filter(|k| model.remove(*k).is_some()).count();
                    let n = match c.delete(&ks, W).unwrap() {
                        Deleted::Known(n) => n,
                        Deleted::Pending(p) => p.fetch(&*b).await.unwrap(),
                    };
                    assert_eq!(n, expected, "{ctx}: delete count");
                }
                4 if rng.next(10) == 0 => {
                    c.delete_all(W).unwrap();
                    model.clear();
                }
                5 | 6 => {
                    c.flush(&*b).await.unwrap();
                }
                7 => {
                    let ks: Vec<String> = (0..rng.next(4) + 1).map(|_| rng.key()).collect();
                    let nc = ReadOptions { no_cache: rng.next(4) == 0 };
                    let got = c.get(&*b, &ks, nc).await.unwrap();
                    let expected: Vec<Option<Vec<u8>>> =
                        ks.iter().map(|k| model.get(k).cloned()).collect();
                    assert_eq!(got, expected, "{ctx}: get {ks:?}");
                }
                _ => {
                    let (mut lo, mut hi) = (rng.key(), rng.key());
                    if lo > hi {
                        std::mem::swap(&mut lo, &mut hi);
                    }
                    // Drawn in the order the test always drew them (start, end, limit,
                    // reverse), so its seeds replay the same cases.
                    let mut opts = ListOptions::new();
                    opts.start = (rng.next(3) > 0).then_some(lo);
                    opts.end = (rng.next(3) > 0).then_some(hi);
                    opts.limit = (rng.next(2) == 0).then(|| rng.next(4) as i64 + 1);
                    opts.reverse = rng.next(2) == 0;
                    let nc = ReadOptions { no_cache: rng.next(5) == 0 };
                    let got = c.list(&*b, &opts, nc).await.unwrap();
                    let range = opts.compile().unwrap();
                    let mut expected: Vec<(String, Vec<u8>)> = match &range {
                        None => Vec::new(),
                        Some(r) => model
                            .iter()
                            .filter(|(k, _)| durable_backend::range_contains(r, k.as_bytes()))
                            .map(|(k, x)| (k.clone(), x.clone()))
                            .collect(),
                    };
                    if opts.reverse {
                        expected.reverse();
                    }
                    if let Some(l) = opts.limit {
                        expected.truncate(l as usize);
                    }
                    assert_eq!(got, expected, "{ctx}: list {opts:?}");
                }
            }
        }
        c.flush(&*b).await.unwrap();
        let stored: BTreeMap<String, Vec<u8>> = b.inner().entries().into_iter().collect();
        assert_eq!(stored, model, "seed {seed}: the backend holds the model after the last flush");
    }
}

/// Lists from its inner store at once, then waits for a permit before answering: the answer
/// is older than whatever happens meanwhile.
struct ListThenWait {
    inner: Arc<MemoryBackend>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait::async_trait]
impl KvBackend for ListThenWait {
    async fn get(&self, keys: &[String]) -> durable_backend::Result<Vec<Option<Vec<u8>>>> {
        self.inner.get(keys).await
    }
    async fn list(
        &self,
        range: &durable_backend::KeyRange,
    ) -> durable_backend::Result<Vec<(String, Vec<u8>)>> {
        let rows = self.inner.list(range).await;
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        rows
    }
    async fn delete(&self, keys: Vec<String>) -> durable_backend::Result<usize> {
        self.inner.delete(keys).await
    }
    async fn write(&self, batch: WriteBatch) -> durable_backend::Result<()> {
        self.inner.write(batch).await
    }
}

#[tokio::test]
async fn an_answer_older_than_a_completed_flush_is_not_kept() {
    let inner = Arc::new(MemoryBackend::new());
    seed(&*inner, &[("k", "1")]).await;
    let slow = Arc::new(ListThenWait {
        inner: inner.clone(),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
    });
    let c = cache();
    c.put("k", v("2"), WriteOptions { allow_unconfirmed: false, no_cache: true }).unwrap();
    let flush = c.take_flush().unwrap().unwrap();
    let ListLookup::Pending(list) = c.lookup_list(&ListOptions::default(), R).unwrap() else {
        panic!("nothing listed yet")
    };
    let lister = {
        let slow = slow.clone();
        tokio::spawn(async move { list.fetch(&*slow).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await; // the backend has answered "k = 1"
    flush.run(&*inner).await.unwrap(); // taken before the list, so it does not wait for it
    slow.gate.add_permits(1);
    assert_eq!(lister.await.unwrap().unwrap(), vec![("k".to_owned(), v("2"))], "the cache wins");
    assert_eq!(c.get(&*inner, &keys(&["k"]), R).await.unwrap(), vec![Some(v("2"))], "not stale");
}
