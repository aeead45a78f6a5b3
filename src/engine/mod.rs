//! Sockets, close modes, the event loop and the observer. Returns data; never prints.

pub mod capture;
pub mod conn;
pub mod path;
pub mod predict;
pub mod reactor;
pub mod side;
pub mod timeline;
pub mod timers;

pub use conn::peer_pace;
pub use reactor::{Emit, Flow, Reactor, RunEnd};
