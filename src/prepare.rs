//! The daemon's pattern work on a pool of threads, results taken back in order.
//!
//! Most of what a line costs is its pattern work ([`PrepareJob`]: the multi-pattern search,
//! the winner's captures, whether it starts a record), which needs nothing but the pattern
//! set; the record and fold logic after it is sequential per source. The classify stage
//! hands each batch to this pool (one thread per CPU, at most [`MAX_THREADS`]) and runs
//! the record logic on the results oldest first, so batches are searched while it and the
//! other stages work. (Splitting each batch in two halves on two threads and joining them
//! left a core idle whenever the file reader or the counters stage held the other one:
//! `scripts/bench-tail` used ~1.3 of 2 cores.)

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::classify::{PatternSet, Scratch};
use crate::records::{PrepareJob, PreparedBatch};

/// Most prepare threads, however many CPUs: each keeps its own regex caches.
pub const MAX_THREADS: usize = 4;

struct Task {
    job: PrepareJob,
    reply: oneshot::Sender<PreparedBatch>,
}

/// Threads that run [`PrepareJob`]s. They end when the pool is dropped.
pub struct PreparePool {
    tx: mpsc::Sender<Task>,
    threads: usize,
}

/// A submitted job's result, to await.
pub type Pending = oneshot::Receiver<PreparedBatch>;

impl PreparePool {
    /// A pool with one thread per CPU (at most [`MAX_THREADS`]).
    pub fn new() -> std::io::Result<PreparePool> {
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS);
        PreparePool::with_threads(n)
    }

    /// A pool of `n` threads (at least one).
    pub fn with_threads(n: usize) -> std::io::Result<PreparePool> {
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let n = n.max(1);
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("logwarden-prep-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(PreparePool { tx, threads: n })
    }

    /// How many batches to keep in flight: enough that no thread waits for the next one.
    pub fn depth(&self) -> usize {
        self.threads + 2
    }

    /// Hands `job` to a thread.
    pub fn submit(&self, job: PrepareJob) -> Pending {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::SendError(task)) = self.tx.send(Task { job, reply }) {
            // Every thread is gone (cannot happen: they outlive the pool). The record
            // logic does the undone job's work itself.
            let _ = task.reply.send(task.job.undone());
        }
        rx
    }
}

fn work(rx: &Mutex<mpsc::Receiver<Task>>) {
    let mut cache: Option<(Arc<PatternSet>, Scratch)> = None;
    loop {
        let task = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.recv() {
                Ok(t) => t,
                Err(_) => return,
            }
        };
        let patterns = task.job.patterns();
        let scratch = match &mut cache {
            Some((p, s)) if Arc::ptr_eq(p, patterns) => s,
            _ => &mut cache.insert((patterns.clone(), patterns.scratch())).1,
        };
        let batch = task.job.run(scratch);
        if !batch.is_prepared() {
            cache = None;
        }
        // The stage may be gone (shutting down): then nobody wants the batch.
        let _ = task.reply.send(batch);
    }
}
