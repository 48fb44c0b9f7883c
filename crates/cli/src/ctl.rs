//! `rampart kv` and `rampart cluster`: HTTP clients for a running cluster.

#[derive(clap::Args, Debug)]
pub struct KvArgs {}

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {}

pub fn run_kv(_args: KvArgs) -> anyhow::Result<()> {
    anyhow::bail!("rampart kv is not implemented yet")
}

pub fn run_cluster(_args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::bail!("rampart cluster is not implemented yet")
}
