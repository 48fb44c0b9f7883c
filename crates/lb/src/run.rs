//! Starting a load balancer: the frontends ([`server`](crate::server)) and,
//! on top, the admin API ([`admin`](crate::admin)), which reads and reloads
//! the running [`Lb`]. Kept out of `server` so that `admin -> server` is the
//! only edge between the two.

use tokio::net::TcpListener;

use crate::config::Config;
use crate::server::{Lb, LbError};

impl Lb {
    /// Binds every frontend and the admin address and starts serving.
    /// Must be called inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Lb, LbError> {
        let admin = config.admin;
        let lb = Lb::start_frontends(config).await?;
        if let Some(addr) = admin {
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(source) => {
                    lb.shutdown();
                    return Err(LbError::Bind { addr, source });
                }
            };
            let local = match listener.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    lb.shutdown();
                    return Err(e.into());
                }
            };
            let task = tokio::spawn(crate::admin::serve(listener, lb.clone()));
            lb.attach_admin(local, task);
            tracing::info!("admin API on http://{local}");
        }
        Ok(lb)
    }
}
