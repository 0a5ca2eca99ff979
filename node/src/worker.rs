//! Background work has one shape: a named [`Worker`] that does one bounded step at a
//! time, says when it has nothing to do, and reports a one-line status. The lifecycle
//! starts every worker with [`spawn`], which runs it until the node's one stop signal and
//! keeps its status where `dynakv status` reads it ([`Registry`]). Garage's `Worker`
//! trait is the model.
//!
//! A step must be bounded (a batch, one exchange) so that a stopping node waits at most
//! one step per worker; a worker whose step may take long can watch the stop signal
//! passed to it. A failing step is logged (once per change of error), counted and
//! retried after the worker's idle wait, never fatal.

use std::future::Future;
use std::sync::{Arc, Mutex};

use dynakv_common::wire::WorkerStatus;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// What a step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// There may be more work: step again at once.
    Busy,
    /// Nothing to do: wait for work before the next step.
    Idle,
    /// The worker is finished for good.
    Done,
}

/// A background task of the node.
pub trait Worker: Send + 'static {
    /// Its name in logs and status (`hint-delivery`, `anti-entropy`, ...).
    fn name(&self) -> &'static str;

    /// Does one bounded step of work.
    fn step(
        &mut self,
        stop: &watch::Receiver<bool>,
    ) -> impl Future<Output = Result<Step, String>> + Send;

    /// Waits until there may be work again (an interval, a wake-up). Dropped when the
    /// node stops.
    fn wait_for_work(&mut self) -> impl Future<Output = ()> + Send;

    /// A one-line account of what it is doing, for `dynakv status`.
    fn status(&self) -> String;
}

/// The status of every worker, shared with the status request.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    workers: Arc<Mutex<Vec<Arc<Mutex<WorkerStatus>>>>>,
}

impl Registry {
    fn register(&self, name: &str) -> Arc<Mutex<WorkerStatus>> {
        let status = Arc::new(Mutex::new(WorkerStatus {
            name: name.to_string(),
            state: "idle".into(),
            steps: 0,
            detail: String::new(),
        }));
        lock(&self.workers).push(status.clone());
        status
    }

    /// A snapshot of every worker's status, in start order.
    pub fn snapshot(&self) -> Vec<WorkerStatus> {
        lock(&self.workers)
            .iter()
            .map(|w| lock(w).clone())
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts `worker` on `tasks`: it steps while busy, waits while idle, and returns when
/// `stop` turns true (after the step in progress) or when it is done.
pub fn spawn<W: Worker>(
    tasks: &mut JoinSet<()>,
    registry: &Registry,
    mut worker: W,
    mut stop: watch::Receiver<bool>,
) {
    let status = registry.register(worker.name());
    tasks.spawn(async move {
        let name = worker.name();
        let mut last_error: Option<String> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            set_state(&status, "busy", None);
            let outcome = worker.step(&stop).await;
            let state = match &outcome {
                Ok(Step::Busy) | Ok(Step::Idle) => "idle",
                Ok(Step::Done) => "stopped",
                Err(_) => "failing",
            };
            {
                let mut s = lock(&status);
                s.steps += 1;
                s.state = state.to_string();
                s.detail = match &outcome {
                    Err(e) => format!("{} (last error: {e})", worker.status()),
                    Ok(_) => worker.status(),
                };
            }
            match outcome {
                Ok(Step::Busy) => {
                    last_error = None;
                    // Let other tasks run between back-to-back steps.
                    tokio::task::yield_now().await;
                    continue;
                }
                Ok(Step::Done) => return,
                Ok(Step::Idle) => last_error = None,
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        warn!(worker = name, cause = %e, "background step failed; will retry");
                    }
                    last_error = Some(e);
                }
            }
            tokio::select! {
                _ = worker.wait_for_work() => {}
                _ = stop.changed() => break,
            }
        }
        set_state(&status, "stopped", None);
        info!(worker = name, "worker stopped");
    });
}

fn set_state(status: &Mutex<WorkerStatus>, state: &str, detail: Option<String>) {
    let mut s = lock(status);
    s.state = state.to_string();
    if let Some(d) = detail {
        s.detail = d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Counter {
        left: u32,
        done: Arc<Mutex<u32>>,
    }

    impl Worker for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }
        async fn step(&mut self, _stop: &watch::Receiver<bool>) -> Result<Step, String> {
            if self.left == 0 {
                return Ok(Step::Idle);
            }
            self.left -= 1;
            *lock(&self.done) += 1;
            if self.left == 2 {
                return Err("transient".into());
            }
            Ok(Step::Busy)
        }
        async fn wait_for_work(&mut self) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fn status(&self) -> String {
            format!("{} left", self.left)
        }
    }

    #[tokio::test]
    async fn a_worker_steps_until_idle_survives_errors_and_stops_on_the_signal() {
        let registry = Registry::default();
        let (stop_tx, stop) = watch::channel(false);
        let done = Arc::new(Mutex::new(0));
        let mut tasks = JoinSet::new();
        spawn(
            &mut tasks,
            &registry,
            Counter {
                left: 5,
                done: done.clone(),
            },
            stop,
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while *lock(&done) < 5 {
            assert!(tokio::time::Instant::now() < deadline, "worker stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let snap = registry.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].name, "counter");
        stop_tx.send(true).unwrap();
        while tasks.join_next().await.is_some() {}
        let snap = registry.snapshot();
        assert_eq!(snap[0].state, "stopped");
        assert!(snap[0].steps >= 5);
    }
}
