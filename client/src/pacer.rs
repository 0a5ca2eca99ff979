//! The pacer of an open-loop `dynakv bench` run: releases operation i when it is due
//! (`start + i / rate`), from the client's own event loop.
//!
//! Workers take a released operation (a semaphore permit) and send it; since only due
//! operations are released, none is sent early, and a worker that was busy when its
//! operation fell due sends it late, its latency counted from when it was due. One
//! task sleeps until the next operation is due on a Linux `timerfd` (high-resolution,
//! registered with the event loop like a socket), so releasing an operation costs at
//! most one wake-up of the loop, and none when the loop is awake anyway for answers.
//! Sleeping per worker on the precise timer thread of `dynakv_common::timer` instead
//! cost 1.7 more context switches and about 45 µs more CPU per operation in the client
//! (docs/benchmarks.md): on a small host, CPU taken from the nodes under test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The schedule of one open-loop run and the operations released from it.
pub(crate) struct Pacer {
    rate: f64,
    /// Set by [`Pacer::start`], after the warm-up.
    start: OnceLock<Instant>,
    /// The next operation a worker takes.
    next: AtomicU64,
    /// One permit per operation that is due and not yet taken.
    released: Semaphore,
}

impl Pacer {
    pub(crate) fn new(rate: f64) -> Arc<Pacer> {
        Arc::new(Pacer {
            rate,
            start: OnceLock::new(),
            next: AtomicU64::new(0),
            released: Semaphore::new(0),
        })
    }

    /// Starts the clock at `at` and the task that releases operations as they fall
    /// due; abort it once every worker is done.
    pub(crate) fn start(self: &Arc<Self>, at: Instant) -> JoinHandle<()> {
        let _ = self.start.set(at);
        tokio::spawn(release(Arc::clone(self), at))
    }

    /// Waits for the next due operation and takes it; returns when it was due.
    pub(crate) async fn next_due(&self) -> Instant {
        if let Ok(permit) = self.released.acquire().await {
            permit.forget();
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        // Set: nothing is released before the clock starts.
        let start = *self.start.get_or_init(Instant::now);
        due_at(start, i, self.rate)
    }
}

/// How many operations of a run of `rate` per second are due `elapsed` after its start:
/// those whose [`offset`] has passed (operation 0 is due at once).
fn due_by(elapsed: Duration, rate: f64) -> u64 {
    let estimate = (elapsed.as_secs_f64() * rate).floor();
    if estimate >= (u64::MAX / 2) as f64 {
        return u64::MAX / 2;
    }
    let mut n = estimate as u64 + 1;
    // `offset` rounds to whole nanoseconds; a step or two either way makes the two agree
    // (bounded, so an absurd rate cannot spin here).
    for _ in 0..4 {
        if n > 1 && offset(n - 1, rate) > elapsed {
            n -= 1;
        }
    }
    for _ in 0..4 {
        if offset(n, rate) <= elapsed {
            n += 1;
        }
    }
    n
}

/// Later than any run lasts: where an absurdly slow rate's due times are clamped.
const NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// When operation `i` is due, from the start of the run: `i / rate`.
fn offset(i: u64, rate: f64) -> Duration {
    Duration::try_from_secs_f64(i as f64 / rate).map_or(NEVER, |d| d.min(NEVER))
}

/// When operation `i` is due (`offset` is at most [`NEVER`], which an `Instant` holds).
fn due_at(start: Instant, i: u64, rate: f64) -> Instant {
    start + offset(i, rate)
}

/// Due operations no worker has taken yet, at most: a run this far behind measures
/// nothing but its backlog, and the semaphore's count stays bounded.
const MAX_BACKLOG: usize = 1 << 20;

/// Releases the operations of a run as they fall due, until aborted.
async fn release(pacer: Arc<Pacer>, start: Instant) {
    let mut sleeper = Sleeper::new();
    let mut given = 0u64;
    loop {
        let due = due_by(Instant::now().saturating_duration_since(start), pacer.rate);
        let room = MAX_BACKLOG.saturating_sub(pacer.released.available_permits()) as u64;
        let more = due.saturating_sub(given).min(room);
        pacer.released.add_permits(more as usize);
        given += more;
        if given < due {
            // Backlog full: wait for the workers to take some.
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            sleeper.sleep_until(due_at(start, given, pacer.rate)).await;
        }
    }
}

/// A precise sleep on the caller's event loop.
struct Sleeper {
    #[cfg(target_os = "linux")]
    timer: Option<tokio::io::unix::AsyncFd<linux::TimerFd>>,
}

impl Sleeper {
    fn new() -> Sleeper {
        Sleeper {
            #[cfg(target_os = "linux")]
            timer: linux::TimerFd::new().and_then(linux::register).ok(),
        }
    }

    async fn sleep_until(&mut self, deadline: Instant) {
        let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
            return;
        };
        #[cfg(target_os = "linux")]
        if let Some(timer) = &self.timer {
            if linux::sleep(timer, wait).await.is_ok() {
                return;
            }
        }
        // Elsewhere (or without a timerfd): the precise timer thread.
        dynakv_common::timer::sleep(wait).await;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::time::Duration;

    use tokio::io::unix::AsyncFd;

    /// A non-blocking monotonic `timerfd`.
    pub struct TimerFd(OwnedFd);

    impl TimerFd {
        pub fn new() -> io::Result<TimerFd> {
            // SAFETY: plain syscall; a non-negative return is a new descriptor we own.
            let fd = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a valid descriptor nobody else owns.
            Ok(TimerFd(unsafe { OwnedFd::from_raw_fd(fd) }))
        }

        /// Arms the timer to expire once, `after` from now (at least 1 ns: zero disarms).
        fn arm(&self, after: Duration) -> io::Result<()> {
            let after = after.max(Duration::from_nanos(1));
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: after.as_secs().min(i64::MAX as u64) as libc::time_t,
                    tv_nsec: after.subsec_nanos() as libc::c_long,
                },
            };
            // SAFETY: valid descriptor and a valid itimerspec; the old value is not asked for.
            let r = unsafe {
                libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut())
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        /// Consumes an expiry: Ok(true) if the timer had expired.
        fn take_expiry(&self) -> io::Result<bool> {
            let mut count = [0u8; 8];
            // SAFETY: reading 8 bytes into an 8-byte buffer from a valid descriptor.
            let r = unsafe { libc::read(self.0.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
            if r == 8 {
                return Ok(true);
            }
            let err = io::Error::last_os_error();
            if r < 0 && err.kind() == io::ErrorKind::WouldBlock {
                return Ok(false);
            }
            Err(err)
        }
    }

    impl AsRawFd for TimerFd {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    /// Registers the timer with the event loop (readable when it expires).
    pub fn register(timer: TimerFd) -> io::Result<AsyncFd<TimerFd>> {
        // SAFETY: a `TimerFd` owns its descriptor for its whole life and `as_raw_fd`
        // always returns that one descriptor.
        Ok(unsafe { AsyncFd::register_with_interest(timer, tokio::io::Interest::READABLE) }?)
    }

    /// Sleeps `wait` on the timer. Arming it resets its expiry count, and a readiness
    /// left from an earlier sleep finds no expiry to read, so it cannot end this one early.
    pub async fn sleep(timer: &AsyncFd<TimerFd>, wait: Duration) -> io::Result<()> {
        let t = timer.get_ref();
        t.arm(wait)?;
        loop {
            let mut ready = timer.readable().await?;
            if t.take_expiry()? {
                return Ok(());
            }
            ready.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_i_is_due_at_i_over_rate_and_counted_from_then() {
        let start = Instant::now();
        assert_eq!(
            due_by(Duration::ZERO, 1000.0),
            1,
            "operation 0 is due at once"
        );
        assert_eq!(due_by(Duration::from_micros(999), 1000.0), 1);
        assert_eq!(due_by(Duration::from_millis(1), 1000.0), 2);
        assert_eq!(due_by(Duration::from_secs(2), 1000.0), 2001);
        assert_eq!(due_at(start, 0, 1000.0), start);
        assert_eq!(
            due_at(start, 1500, 1000.0),
            start + Duration::from_millis(1500)
        );
        // The operations due by a time are exactly those whose due time has passed.
        for i in 0..5000u64 {
            let at = due_at(start, i, 777.0) - start;
            assert!(
                due_by(at, 777.0) > i,
                "operation {i} is due at its own time"
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_pacer_never_releases_an_operation_before_it_is_due() {
        let rate = 20_000.0;
        let pacer = Pacer::new(rate);
        let start = Instant::now();
        let task = pacer.start(start);
        for i in 0..400u64 {
            let due = pacer.next_due().await;
            assert_eq!(due, due_at(start, i, rate), "operations are taken in order");
            assert!(
                due <= Instant::now(),
                "operation {i} released before it was due"
            );
        }
        task.abort();
    }

    #[test]
    fn an_absurd_rate_neither_spins_nor_overflows() {
        for rate in [1e12, 1e300, f64::MAX] {
            let n = due_by(Duration::from_secs(3600), rate);
            assert!(n > 1_000_000, "rate {rate}: {n}");
            assert!(due_by(Duration::ZERO, rate) >= 1);
        }
        for rate in [1e-9, 1e-300, f64::MIN_POSITIVE] {
            assert_eq!(due_by(Duration::from_secs(3600), rate), 1, "rate {rate}");
            assert!(offset(1, rate) >= Duration::from_secs(3600));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_run_far_behind_keeps_a_bounded_backlog() {
        let pacer = Pacer::new(1e300);
        let task = pacer.start(Instant::now());
        let deadline = Instant::now() + Duration::from_secs(10);
        // Everything is due at once: the pacer fills the backlog and stops there.
        while pacer.released.available_permits() < MAX_BACKLOG {
            assert!(Instant::now() < deadline, "the backlog never filled");
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
            assert_eq!(pacer.released.available_permits(), MAX_BACKLOG);
        }
        task.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_sleep_ends_at_its_deadline_not_before() {
        let mut sleeper = Sleeper::new();
        #[cfg(target_os = "linux")]
        assert!(sleeper.timer.is_some(), "a timerfd on Linux");
        for micros in [0u64, 50, 300, 2_000] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            sleeper.sleep_until(deadline).await;
            assert!(Instant::now() >= deadline, "woke before {micros} µs");
        }
    }
}
