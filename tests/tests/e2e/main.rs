//! End-to-end scenarios against real `dynakv-node` processes on 127.0.0.1.
//! One test binary; each scenario starts its own cluster on OS-chosen ports.

mod harness;

mod antientropy;
mod cli;
mod dev;
mod diskfull;
mod durability;
mod faults;
mod handoff;
mod hosts;
mod kv;
mod lab;
mod measure;
mod metrics;
mod robustness;
mod routing;
mod siblings;
mod tombstones;
