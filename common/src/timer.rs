//! A sleep precise to tens of microseconds, for injected delays (cargo feature `net`).
//!
//! tokio's timer wheel ticks every millisecond and rounds a sleep up to the next tick, so
//! `tokio::time::sleep(300µs)` takes about a millisecond: an injected delay drawn from
//! Exp(λ = 1/ms) would come out roughly twice as long as asked, and a lab run could not
//! match the model it is compared with. [`sleep`] hands delays under a few milliseconds
//! to one timer thread that waits on a condition variable with the deadline of the
//! earliest sleeper (the kernel's high-resolution timers wake it within tens of µs) and
//! completes their futures; longer delays stay on tokio's timer, where a millisecond is
//! noise.
//!
//! The fault layer and the lab use it, and the bench's open-loop pacer where it has no
//! timerfd; the thread starts on first use.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Delays from this long on go to tokio's timer.
const COARSE_FROM: Duration = Duration::from_millis(20);

struct Sleeper {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Sleeper {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Sleeper {}
impl PartialOrd for Sleeper {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sleeper {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Wheel {
    queue: Mutex<(BinaryHeap<Reverse<Sleeper>>, u64)>,
    changed: Condvar,
}

/// The timer thread's queue, started on first use (None if the thread cannot start:
/// then every sleep uses tokio's timer).
fn wheel() -> Option<&'static Wheel> {
    static WHEEL: OnceLock<Option<&'static Wheel>> = OnceLock::new();
    *WHEEL.get_or_init(|| {
        let wheel: &'static Wheel = Box::leak(Box::new(Wheel {
            queue: Mutex::new((BinaryHeap::new(), 0)),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("dynakv-precise-timer".into())
            .spawn(move || run(wheel))
            .ok()
            .map(|_| wheel)
    })
}

fn run(wheel: &'static Wheel) {
    let mut guard = wheel.queue.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = Instant::now();
        while guard.0.peek().is_some_and(|Reverse(s)| s.at <= now) {
            if let Some(Reverse(s)) = guard.0.pop() {
                let _ = s.wake.send(());
            }
        }
        guard = match guard.0.peek() {
            Some(Reverse(next)) => {
                let wait = next.at.saturating_duration_since(now);
                wheel
                    .changed
                    .wait_timeout(guard, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => wheel.changed.wait(guard).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

/// Sleeps for `d`, to within tens of microseconds for short delays.
pub async fn sleep(d: Duration) {
    if d.is_zero() {
        return;
    }
    let wheel = match wheel() {
        Some(w) if d < COARSE_FROM => w,
        _ => return tokio::time::sleep(d).await,
    };
    let at = Instant::now() + d;
    let (tx, rx) = oneshot::channel();
    {
        let mut guard = wheel.queue.lock().unwrap_or_else(|p| p.into_inner());
        guard.1 += 1;
        let seq = guard.1;
        guard.0.push(Reverse(Sleeper { at, seq, wake: tx }));
        wheel.changed.notify_one();
    }
    // The sender is only dropped after sending.
    let _ = rx.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sleep_never_ends_early() {
        for us in [1u64, 50, 200, 1_500, 25_000] {
            let t0 = Instant::now();
            sleep(Duration::from_micros(us)).await;
            assert!(t0.elapsed() >= Duration::from_micros(us));
        }
    }

    /// How precise short sleeps are on this machine (a measurement, not a test):
    /// `cargo test -p dynakv-common --features net --release timer::tests::measure -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement"]
    async fn measure() {
        for us in [100u64, 300, 1_000] {
            let mut took: Vec<u128> = Vec::new();
            for _ in 0..500 {
                let t0 = Instant::now();
                sleep(Duration::from_micros(us)).await;
                took.push(t0.elapsed().as_micros());
            }
            took.sort();
            let mut tokio_took: Vec<u128> = Vec::new();
            for _ in 0..500 {
                let t0 = Instant::now();
                tokio::time::sleep(Duration::from_micros(us)).await;
                tokio_took.push(t0.elapsed().as_micros());
            }
            tokio_took.sort();
            println!(
                "{us} µs: precise p50 {} p99 {} µs; tokio p50 {} p99 {} µs",
                took[250], took[495], tokio_took[250], tokio_took[495]
            );
        }
    }

    #[tokio::test]
    async fn concurrent_sleepers_wake_in_deadline_order() {
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, us) in [900u64, 100, 500, 300].into_iter().enumerate() {
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                sleep(Duration::from_micros(us * 3)).await;
                order.lock().unwrap().push(i);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![1, 3, 2, 0]);
    }
}
