//! Polling briefly before a runtime thread sleeps, so that work due within microseconds
//! does not pay for a sleep and a wake-up.
//!
//! On a virtual machine whose idle vCPUs halt (no guest halt polling), waking a sleeping
//! thread is an interrupt injected by the hypervisor, tens of µs (~30 µs on the machine
//! of docs/benchmarks.md), and a lone put pays five or six of them across the client and
//! the nodes. Seastar's reactor polls for a while before it sleeps for the same reason
//! (`--idle-poll-time-us`, 200 µs by default). Here a node's runtime, before each park,
//! checks for up to `idle_spin_us` whether its endpoint's socket has a datagram or
//! another thread [`kick`]ed it (the syncer finishing an fsync), and yields the CPU
//! between checks, so a thread that is runnable on the same CPU still runs first. When
//! something arrives it returns, and the runtime's `epoll_wait` finds it ready instead
//! of sleeping. Timers are not watched: one due during the spin runs up to one spin late.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Most sockets watched; a node has one endpoint.
const MAX_WATCHED: usize = 4;
/// The sockets the runtime's threads watch while spinning (the node's QUIC endpoint),
/// -1 in unused slots. Atomics, so a park reads them without a lock or an allocation.
static FDS: [AtomicI32; MAX_WATCHED] = [const { AtomicI32::new(-1) }; MAX_WATCHED];
/// Slots [`watch`] has handed out (may pass `MAX_WATCHED`: the extra ones are dropped).
static WATCHED: AtomicUsize = AtomicUsize::new(0);
/// Bumped by [`kick`]; a change ends a spin.
static KICKS: AtomicU64 = AtomicU64::new(0);
/// How long [`before_park`] spins, ns (0: not at all).
static SPIN_NANOS: AtomicU64 = AtomicU64::new(0);
/// How long it spins instead while at most one [`busy`] guard is held (0: no
/// different from [`SPIN_NANOS`]).
static LIGHT_SPIN_NANOS: AtomicU64 = AtomicU64::new(0);
/// [`Busy`] guards held: requests the process is serving.
static BUSY: AtomicUsize = AtomicUsize::new(0);
/// How the spins of [`before_park`] ended, by [`SpinEnd`] (see [`stats`]).
static ENDS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// Sets how long [`before_park`] spins (zero: it returns at once).
pub fn set(spin: Duration) {
    store_nanos(&SPIN_NANOS, spin);
}

fn store_nanos(slot: &AtomicU64, spin: Duration) {
    slot.store(
        u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// Sets how long [`before_park`] spins while the process serves at most one request
/// (holds at most one [`busy`] guard); zero: as long as under load ([`set`]).
///
/// A request that arrives alone is a lone client's (whose next one follows its answer
/// within a few hundred µs) or a replica's, whose coordinator then waits for it; under
/// load, spins that long take CPU the other threads want (docs/benchmarks.md).
pub fn set_light(spin: Duration) {
    store_nanos(&LIGHT_SPIN_NANOS, spin);
}

/// Counts requests being served until dropped (see [`set_light`]).
#[must_use = "the requests count as served only while the guard is held"]
pub struct Busy(usize);

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// `requests` (a batch's items, or one) are being served until the returned guard is
/// dropped.
pub fn busy(requests: usize) -> Busy {
    BUSY.fetch_add(requests, Ordering::Relaxed);
    Busy(requests)
}

/// Watch `fd` for readability while spinning. It should stay open for the life of the
/// process (a node's one endpoint socket does); a closed one only ends spins early
/// (`poll` reports it at once). Past [`MAX_WATCHED`] sockets, more are not watched.
pub fn watch(fd: RawFd) {
    if let Some(free) = FDS.get(WATCHED.fetch_add(1, Ordering::AcqRel)) {
        free.store(fd, Ordering::Release);
    }
}

/// Ends the current spin, if any: another thread has woken, or is about to wake, the
/// runtime.
pub fn kick() {
    KICKS.fetch_add(1, Ordering::Release);
}

/// The runtime's hook before a thread parks (`on_thread_park`): spins for the time
/// [`set`], watching the [`watch`]ed sockets and [`kick`]s.
pub fn before_park() {
    if let Some(end) = park_spin() {
        let slot = match end {
            SpinEnd::Readable => 0,
            SpinEnd::Kicked => 1,
            SpinEnd::TimedOut => 2,
        };
        ENDS[slot].fetch_add(1, Ordering::Relaxed);
    }
}

/// How this process's spins before parking have ended so far: whether the spin pays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpinStats {
    /// Spins ended by a datagram on a watched socket: a sleep and a wake-up saved.
    pub readable: u64,
    /// Spins ended by a [`kick`] (an fsync finished): a sleep and a wake-up saved.
    pub kicked: u64,
    /// Spins that found nothing: the thread slept after spinning in vain.
    pub timed_out: u64,
}

/// The counts of [`SpinStats`] (all zero while no spin is [`set`] or no runtime parks
/// through [`before_park`]).
pub fn stats() -> SpinStats {
    let get = |i: usize| ENDS[i].load(Ordering::Relaxed);
    SpinStats {
        readable: get(0),
        kicked: get(1),
        timed_out: get(2),
    }
}

/// What [`before_park`] does; `None` when no spin is [`set`].
fn park_spin() -> Option<SpinEnd> {
    let light = LIGHT_SPIN_NANOS.load(Ordering::Relaxed);
    let nanos = if light > 0 && BUSY.load(Ordering::Relaxed) <= 1 {
        light
    } else {
        SPIN_NANOS.load(Ordering::Relaxed)
    };
    if nanos == 0 {
        return None;
    }
    // An unused slot holds -1, which poll ignores.
    let fds = FDS.each_ref().map(|slot| slot.load(Ordering::Acquire));
    Some(spin(&fds, &KICKS, Duration::from_nanos(nanos)))
}

/// Why a [`spin`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpinEnd {
    /// One of the sockets is readable (or closed: poll reports that too).
    Readable,
    /// `kicks` changed.
    Kicked,
    /// Nothing came within the time.
    TimedOut,
}

/// Polls `fds` for readability and `kicks` for a change until one of them happens or
/// `limit` has passed, yielding the CPU between checks.
///
/// At most [`MAX_WATCHED`] of `fds` are watched; a negative one is ignored (`poll`'s rule).
pub fn spin(fds: &[RawFd], kicks: &AtomicU64, limit: Duration) -> SpinEnd {
    let unused = libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    };
    let mut polled = [unused; MAX_WATCHED];
    let n = fds.len().min(MAX_WATCHED);
    for (p, &fd) in polled.iter_mut().zip(&fds[..n]) {
        p.fd = fd;
        p.events = libc::POLLIN;
    }
    let seen = kicks.load(Ordering::Acquire);
    let deadline = Instant::now() + limit;
    loop {
        // SAFETY: `polled` is a valid, exclusively borrowed array of that many pollfd,
        // and a timeout of 0 never blocks.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 0) };
        if ready > 0 {
            return SpinEnd::Readable;
        }
        if kicks.load(Ordering::Acquire) != seen {
            return SpinEnd::Kicked;
        }
        if Instant::now() >= deadline {
            return SpinEnd::TimedOut;
        }
        // SAFETY: sched_yield has no preconditions.
        unsafe {
            libc::sched_yield();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// Long enough that a spin which ended did not end by timing out (one that misses
    /// what it watches ends by timing out, and its test fails, after this long).
    const LONG: Duration = Duration::from_secs(5);

    fn socket() -> std::net::UdpSocket {
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket")
    }

    #[test]
    fn a_datagram_waiting_on_a_watched_socket_ends_the_spin() {
        let rx = socket();
        let tx = socket();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let kicks = AtomicU64::new(0);
        assert_eq!(
            spin(&[socket().as_raw_fd(), rx.as_raw_fd()], &kicks, LONG),
            SpinEnd::Readable
        );
    }

    #[test]
    fn a_kick_from_another_thread_ends_the_spin() {
        let rx = socket();
        let kicks = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let kicker = {
            let (kicks, done) = (kicks.clone(), done.clone());
            std::thread::spawn(move || {
                // Kick until the spinner has seen one: it may start after the first.
                while !done.load(Ordering::Acquire) {
                    kicks.fetch_add(1, Ordering::Release);
                    std::thread::yield_now();
                }
            })
        };
        let end = spin(&[rx.as_raw_fd()], &kicks, LONG);
        done.store(true, Ordering::Release);
        kicker.join().unwrap();
        assert_eq!(end, SpinEnd::Kicked);
    }

    #[test]
    fn with_nothing_arriving_the_spin_ends_when_its_time_is_up() {
        let rx = socket();
        let kicks = AtomicU64::new(0);
        let limit = Duration::from_millis(2);
        let started = Instant::now();
        assert_eq!(spin(&[rx.as_raw_fd()], &kicks, limit), SpinEnd::TimedOut);
        assert!(started.elapsed() >= limit);
    }

    /// The only test of the process-wide state (`set`, `watch`, `kick`), so no other test
    /// changes it meanwhile.
    #[test]
    fn the_park_hook_spins_only_when_set_and_watches_the_registered_socket() {
        assert_eq!(park_spin(), None, "no spin before one is set");
        let rx = socket();
        let tx = socket();
        watch(rx.as_raw_fd());
        set(LONG);
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        assert_eq!(park_spin(), Some(SpinEnd::Readable));
        // The datagram is still unread: the hook's own spin ends the same way, counted.
        let before = stats();
        before_park();
        let after = stats();
        assert_eq!(
            after,
            SpinStats {
                readable: before.readable + 1,
                ..before
            }
        );
        set(Duration::ZERO);
        assert_eq!(park_spin(), None, "a spin set to zero is off");
        before_park();
        assert_eq!(stats(), after, "a park without a spin counts nothing");
        // The light-load spin applies while at most one request is being served.
        set_light(LONG);
        let first = busy(1);
        assert_eq!(
            park_spin(),
            Some(SpinEnd::Readable),
            "one request: light load"
        );
        let second = busy(1);
        assert_eq!(
            park_spin(),
            None,
            "two requests: the (zero) spin under load"
        );
        drop((first, second));
        assert_eq!(
            park_spin(),
            Some(SpinEnd::Readable),
            "none left: light load"
        );
        let batch = busy(2);
        assert_eq!(park_spin(), None, "a batch of two is load");
        drop(batch);
        assert_eq!(park_spin(), Some(SpinEnd::Readable));
        set_light(Duration::ZERO);
        assert_eq!(park_spin(), None);
    }

    #[test]
    fn a_spin_of_zero_checks_once_and_returns() {
        let kicks = AtomicU64::new(0);
        assert_eq!(spin(&[], &kicks, Duration::ZERO), SpinEnd::TimedOut);
    }
}
