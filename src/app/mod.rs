//! The drivers: one per command, each running a plan on the engine and handing
//! what comes back to [`print`], the only writer.

#[cfg(target_os = "linux")]
mod bench;
#[cfg(target_os = "linux")]
mod check;
#[cfg(target_os = "linux")]
mod check_pid;
#[cfg(target_os = "linux")]
mod inspect;
#[cfg(target_os = "linux")]
mod lab;
#[cfg(target_os = "linux")]
mod path;
pub mod print;
#[cfg(target_os = "linux")]
mod procfs;
#[cfg(target_os = "linux")]
mod serve;

use crate::error::Outcome;
use crate::plan::Plan;

/// Runs a validated plan with its driver.
pub fn run(plan: Plan) -> anyhow::Result<Outcome> {
    match plan {
        Plan::Text(text) => {
            print::write_stdout(&text)?;
            Ok(Outcome::DONE)
        }
        #[cfg(target_os = "linux")]
        Plan::Serve(plan) => serve::serve(plan),
        #[cfg(target_os = "linux")]
        Plan::Connect(plan) => serve::connect(plan),
        #[cfg(target_os = "linux")]
        Plan::Lab(plan) => lab::lab(&plan),
        #[cfg(target_os = "linux")]
        Plan::Bench(plan) => bench::bench(&plan),
        #[cfg(target_os = "linux")]
        Plan::Check(plan) => check::check(&plan),
        #[cfg(target_os = "linux")]
        Plan::CheckPid(plan) => check_pid::check_pid(&plan),
        #[cfg(target_os = "linux")]
        Plan::Inspect(plan) => inspect::inspect(&plan),
        #[cfg(target_os = "linux")]
        Plan::Path(plan) => path::path(&plan),
        #[cfg(not(target_os = "linux"))]
        Plan::Serve(_)
        | Plan::Connect(_)
        | Plan::Lab(_)
        | Plan::Bench(_)
        | Plan::Check(_)
        | Plan::CheckPid(_)
        | Plan::Inspect(_)
        | Plan::Path(_) => Err(crate::Failure::Unsupported.into()),
    }
}
