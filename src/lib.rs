//! tcpbye: make a real TCP connection end in a chosen way and report what the
//! other side observes, when, and through which mechanism.
//!
//! Data flows one way: [`cli`] (clap types) → [`plan`] (validated; the one place
//! arguments become plans) → [`app`] (a driver per command; `app::print` is the
//! only writer) → `engine` (sockets, loop, observer; never prints) → [`judge`]
//! (what the facts mean) → [`report`] (the model, which is the JSON contract, and
//! one renderer per format). [`vocab`] (names both sides share), [`values`] (the
//! command line's values) and [`sys`] (all unsafe, all libc) sit at the bottom.

#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

pub mod app;
pub mod cli;
#[cfg(target_os = "linux")]
pub mod engine;
pub mod error;
pub mod judge;
pub mod plan;
pub mod report;
pub mod sys;
pub mod values;
pub mod vocab;

pub use error::{Capability, ExitCode, Failure};

/// Runs a parsed command line; the exit code says how it went.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    let outcome = app::run(plan::build(cli.command, plan::Privileges::detect())?)?;
    Ok(outcome.exit_code())
}
