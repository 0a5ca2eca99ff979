//! What one sleep and wake-up costs on this host: a UDP ping-pong between two threads
//! on 127.0.0.1, once with blocking receives (each message wakes a sleeping thread, as
//! a node's event loop is woken for each request at moderate load) and once with
//! busy-polling receives (nobody sleeps). The difference is the price of going idle and
//! being woken, which on a virtual machine includes the exits to the hypervisor.
//!
//! `cargo run --release -p dynakv-node --example wake_rtt [ROUND_TRIPS]`
//!
//! docs/benchmarks.md uses it to explain what a put that arrives alone costs.

use std::io::{ErrorKind, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// How long either side waits for a message before giving up (a lost datagram or a
/// failed peer must not hang the measurement).
const PATIENCE: Duration = Duration::from_secs(5);

fn main() -> std::io::Result<()> {
    let round_trips: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
            std::io::Error::new(
                ErrorKind::InvalidInput,
                "ROUND_TRIPS must be a positive number",
            )
        })?,
        None => 20_000,
    };
    let mut out = std::io::stdout().lock();
    for busy in [false, true] {
        let mut rtts = ping_pong(round_trips, busy)?;
        rtts.sort_unstable();
        let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
        writeln!(
            out,
            "{:<13} {} round trips: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs",
            if busy { "busy-polling" } else { "blocking" },
            rtts.len(),
            at(0.50),
            at(0.90),
            at(0.99)
        )?;
    }
    Ok(())
}

/// Round-trip times of `n` one-byte messages bounced off an echo thread.
fn ping_pong(n: usize, busy: bool) -> std::io::Result<Vec<Duration>> {
    let echo = UdpSocket::bind("127.0.0.1:0")?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.connect(echo.local_addr()?)?;
    echo.connect(client.local_addr()?)?;
    for socket in [&echo, &client] {
        socket.set_nonblocking(busy)?;
        socket.set_read_timeout(Some(PATIENCE))?;
    }

    let echoer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = [0u8; 16];
        for _ in 0..n {
            receive(&echo, &mut buf)?;
            echo.send(&buf[..1])?;
        }
        Ok(())
    });

    let mut buf = [0u8; 16];
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        client.send(&[1])?;
        receive(&client, &mut buf)?;
        rtts.push(start.elapsed());
    }
    echoer
        .join()
        .map_err(|_| std::io::Error::other("echo thread panicked"))??;
    Ok(rtts)
}

/// One receive: blocking, or spinning on a non-blocking socket until a message is there;
/// either way at most [`PATIENCE`].
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<usize> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match socket.recv(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::hint::spin_loop()
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!("no message within {PATIENCE:?}"),
                ))
            }
            other => return other,
        }
    }
}
