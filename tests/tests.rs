//! The integration tests, one binary (as ripgrep has it): each module tests one
//! part of tcpbye against real sockets, real programs and real namespaces; `common`
//! is their one process harness. `cargo test --test tests MODULE::` runs one part,
//! e.g. `cargo test --test tests golden::`.

mod common;

mod addresses;
mod both_ends;
mod check;
mod check_pid;
mod check_truth;
mod core;
mod docs;
mod edges;
mod first_hour;
mod generated;
mod golden;
mod hostile;
mod inspect;
mod lab;
mod ladder;
mod layout;
mod load;
mod middlebox;
mod path;
mod path_boxes;
mod proxy;
mod remote;
mod silent;
mod truth;
mod wording;
