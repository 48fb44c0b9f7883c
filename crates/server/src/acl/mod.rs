//! Client authentication and access control, shared by RESP and HTTP.
//!
//! - [`rules`]: users and Redis 7.0's ACL rules (the subset rampart supports), pure.
//! - [`password`]: argon2id hashing on a bounded pool off the async workers.
//! - [`store`]: users kept in the replicated store (both modes) and each node's view of them;
//!   protected mode.
//!
//! The command categories live in the RESP command table (`resp/table.rs`), from which
//! [`crate::resp::acl_catalog`] builds the catalog the rules name commands by. HTTP endpoints
//! are checked as the RESP command that does the same thing (see `http.rs`).

pub mod password;
pub mod rules;
pub mod store;

pub use rules::{Catalog, Denied, User};
pub use store::{Acl, AclConfig, AuthError, View};

/// Redis 7.0's NOPERM line for a refused command.
pub fn noperm_command(fullname: &str) -> String {
    format!("NOPERM this user has no permissions to run the '{fullname}' command")
}

/// Redis 7.0's NOPERM line for a refused key.
pub const NOPERM_KEY: &str = "NOPERM this user has no permissions to access one of the keys used as arguments";
/// Redis's reply to a command before authentication.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// Redis's reply to a failed AUTH.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
