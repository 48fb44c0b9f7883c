//! rampart-lb: the load balancer.
pub mod algo;
pub mod cli {
    #[derive(clap::Args, Debug)]
    pub struct LbArgs {}

    #[derive(Debug, thiserror::Error)]
    #[error("rampart lb is not implemented yet")]
    pub struct NotYet;

    pub fn run(_args: LbArgs) -> Result<(), NotYet> {
        Err(NotYet)
    }
}
