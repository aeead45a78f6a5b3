//! Judgement: what the engine's facts mean. The reaction of a program under
//! `check` (on this host, or on another from the wire), and what a path did to
//! endings and idle connections under `path`, with their predictions and advice.
//! Judges take typed facts and plain values and return the report model; they
//! never print, and never see a driver's types.

pub mod check;
pub mod inspect;
mod keepalive;
pub mod path;
pub mod programs;
pub mod remote;
mod words;

pub use words::{Remote, fmt_secs};
