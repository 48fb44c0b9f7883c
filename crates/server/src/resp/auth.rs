//! Authentication and ACL on a RESP connection: the gate every command passes (Redis 7.0's
//! order: unknown command, arity, `NOAUTH`, then `NOPERM` for the command and then its keys),
//! `AUTH`, `HELLO ... AUTH`, and the `ACL` subcommands.

use std::sync::Arc;

use bytes::Bytes;
use rampart_resp::{Protocol, Value};

use super::table::{acl_target, Spec};
use super::{err, parse_i64, Conn};
use crate::acl::rules::{category_flag, CATEGORIES, DEFAULT_USER};
use crate::acl::{noperm_command, AuthError, Denied, User, NOAUTH, NOPERM_KEY, WRONGPASS};

/// Who a connection is.
pub(super) struct Session {
    /// Redis's `c->authenticated`: set at connect when the default user needs no password, and
    /// by a successful AUTH.
    pub authenticated: bool,
    pub name: Vec<u8>,
    pub user: Arc<User>,
    /// The ACL generation `user` was resolved at.
    pub generation: u64,
}

impl Conn {
    /// The session of a new connection: the default user, authenticated when it needs no
    /// password (as Redis does).
    pub(super) fn new_session(&self) -> Session {
        let acl = &self.app.acl;
        let user = acl.view().default_user();
        Session {
            authenticated: user.enabled && user.nopass,
            name: DEFAULT_USER.to_vec(),
            user,
            generation: acl.generation(),
        }
    }

    /// The connection's user as of now. `None`: the user was deleted, and the connection must
    /// close (Redis disconnects the clients of a deleted user).
    pub(super) fn current_user(&mut self) -> Option<Arc<User>> {
        let acl = &self.app.acl;
        let generation = acl.generation();
        if generation != self.session.generation {
            self.session.user = acl.view().user(&self.session.name)?;
            self.session.generation = generation;
        }
        Some(self.session.user.clone())
    }

    /// Whether the connection may run `args` (its arity already checked); the error reply if
    /// not. Sets `close_silently` when the connection's user no longer exists.
    pub(super) fn gate(&mut self, spec: &'static Spec, args: &[Bytes]) -> Result<(), Value> {
        let target = acl_target(spec, args)?;
        if spec.no_auth() {
            return Ok(());
        }
        if !self.session.authenticated {
            return Err(err(NOAUTH));
        }
        let Some(user) = self.current_user() else {
            self.close_silently = true;
            return Err(err("ERR the connection's user was deleted"));
        };
        match user.check(target.id, spec.keys(args)) {
            Ok(()) => Ok(()),
            Err(Denied::Command) => Err(err(noperm_command(&target.fullname()))),
            Err(Denied::Key) => Err(err(NOPERM_KEY)),
        }
    }

    async fn authenticate(&mut self, name: &[u8], password: &[u8]) -> Result<(), Value> {
        match self.app.acl.authenticate(name, password).await {
            Ok(user) => {
                self.session =
                    Session { authenticated: true, name: name.to_vec(), user, generation: self.app.acl.generation() };
                Ok(())
            }
            Err(AuthError::WrongPass) => Err(err(WRONGPASS)),
            Err(AuthError::Busy(m)) => Err(err(format!("ERR {m}"))),
        }
    }

    /// `AUTH [user] password`.
    pub(super) async fn auth(&mut self, args: &[Bytes]) -> Value {
        if args.len() > 3 {
            return err("ERR syntax error");
        }
        let (name, password) = if args.len() == 2 {
            if self.app.acl.view().default_user().nopass {
                return err(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure \
                     your configuration is correct?",
                );
            }
            (DEFAULT_USER, &args[1][..])
        } else {
            (&args[1][..], &args[2][..])
        };
        match self.authenticate(name, password).await {
            Ok(()) => Value::ok(),
            Err(reply) => reply,
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    pub(super) async fn hello(&mut self, args: &[Bytes]) -> Value {
        let mut proto = self.proto;
        let mut i = 1;
        if args.len() >= 2 {
            match parse_i64(&args[1]) {
                Some(2) => proto = Protocol::Resp2,
                Some(3) => proto = Protocol::Resp3,
                Some(_) => return err("NOPROTO unsupported protocol version"),
                None => return err("ERR Protocol version is not an integer or out of range"),
            }
            i = 2;
        }
        // Redis 7.0 applies AUTH and SETNAME as it parses them: a later syntax error leaves
        // them done.
        while i < args.len() {
            let more = args.len() - 1 - i;
            let opt = &args[i];
            if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
                let (user, pass) = (args[i + 1].clone(), args[i + 2].clone());
                if let Err(reply) = self.authenticate(&user, &pass).await {
                    return reply;
                }
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
                let n = &args[i + 1];
                if n.iter().any(|b| *b <= b' ' || *b > b'~') {
                    return err("ERR Client names cannot contain spaces, newlines or special characters.");
                }
                self.name = Some(n.clone());
                i += 2;
            } else {
                return err(format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(opt)));
            }
        }
        if !self.session.authenticated {
            return err(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> \
                 <pass> option can be used to authenticate the client and select the RESP protocol version at the \
                 same time",
            );
        }
        self.proto = proto;
        self.hello_reply()
    }

    /// The `ACL` subcommands (the subcommand and its arity already checked by the gate).
    pub(super) async fn acl(&mut self, args: &[Bytes]) -> Value {
        let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
        let acl = self.app.acl.clone();
        match sub.as_str() {
            "whoami" => Value::Bulk(Bytes::from(self.session.name.clone())),
            "cat" => match args.get(2) {
                None => Value::Array(CATEGORIES.iter().map(|c| Value::bulk(*c)).collect()),
                Some(c) => {
                    let name = String::from_utf8_lossy(c).to_ascii_lowercase();
                    match category_flag(&name) {
                        Some(flag) if args.len() == 3 => {
                            Value::Array(acl.catalog().in_category(flag).into_iter().map(Value::bulk).collect())
                        }
                        Some(_) => err("ERR Unknown subcommand or wrong number of arguments for 'CAT'. Try ACL HELP."),
                        None => err(format!("ERR Unknown category '{}'", String::from_utf8_lossy(c))),
                    }
                }
            },
            "users" | "list" | "getuser" => {
                if let Err(e) = acl.refresh(rampart_kv::Consistency::Linearizable).await {
                    return err(e.resp_line());
                }
                let view = acl.view();
                match sub.as_str() {
                    "users" => {
                        Value::Array(view.all().iter().map(|u| Value::Bulk(Bytes::from(u.name.clone()))).collect())
                    }
                    "list" => Value::Array(
                        view.all().iter().map(|u| Value::Bulk(Bytes::from(u.describe(acl.catalog())))).collect(),
                    ),
                    _ => match view.user(&args[2]) {
                        None => Value::Null,
                        Some(u) => getuser_reply(&u, acl.catalog()),
                    },
                }
            }
            "setuser" => {
                let ops = args[3..].iter().map(|a| a.to_vec()).collect();
                match acl.set_user(&args[2], ops).await {
                    Ok(()) => Value::ok(),
                    Err(line) => err(line),
                }
            }
            "deluser" => {
                let names: Vec<Vec<u8>> = args[2..].iter().map(|a| a.to_vec()).collect();
                match acl.delete_users(&names).await {
                    Ok(n) => {
                        // Redis closes the connections of a deleted user, this one after its reply.
                        if names.contains(&self.session.name) {
                            self.quit = true;
                        }
                        Value::Integer(n)
                    }
                    Err(line) => err(line),
                }
            }
            // The gate answers every other subcommand.
            _ => err(format!("ERR unknown subcommand '{sub}'. Try ACL HELP.")),
        }
    }
}

/// `ACL GETUSER`'s map: flags, passwords, commands, keys, channels, selectors.
fn getuser_reply(u: &User, catalog: &crate::acl::Catalog) -> Value {
    Value::Map(vec![
        (Value::bulk("flags"), Value::Array(u.flags().into_iter().map(Value::bulk).collect())),
        (Value::bulk("passwords"), Value::Array(u.passwords.iter().map(|p| Value::bulk(p.clone())).collect())),
        (Value::bulk("commands"), Value::bulk(u.describe_commands(catalog))),
        (Value::bulk("keys"), Value::Bulk(Bytes::from(u.describe_keys()))),
        (Value::bulk("channels"), Value::bulk("")),
        (Value::bulk("selectors"), Value::Array(vec![])),
    ])
}
