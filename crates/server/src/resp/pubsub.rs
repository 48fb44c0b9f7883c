//! SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE, PUBLISH and PUBSUB on a connection, with
//! redis-server 7.0's replies; delivery is [`crate::pubsub::Hub`]'s.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rampart_resp::{Protocol, Value};

use super::table::Op;
use super::{err, Conn};
use crate::pubsub::{
    encode_confirmation, encode_push, Hub, Inbox, Subscriber, CHANNEL_BYTES_MAX, SUBSCRIPTIONS_PER_CONN_MAX,
};

/// A connection's subscriptions; dropping it leaves every one.
pub(super) struct SubState {
    hub: Arc<Hub>,
    id: u64,
    subscriber: Subscriber,
    pub(super) inbox: Inbox,
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
}

impl SubState {
    fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

impl Drop for SubState {
    fn drop(&mut self) {
        for c in &self.channels {
            self.hub.unsubscribe(self.id, c);
        }
        for p in &self.patterns {
            self.hub.punsubscribe(self.id, p);
        }
    }
}

/// The commands a RESP2 connection with subscriptions may run (Redis 7.0's list).
pub(super) fn allowed_when_subscribed(name: &str) -> bool {
    matches!(name, "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "ping" | "quit" | "reset")
}

/// Redis's refusal of a channel the user may not use.
const NOPERM_CHANNEL: &str = "NOPERM this user has no permissions to access one of the channels used as arguments";

impl Conn {
    /// True in RESP2 subscribed mode (RESP3 connections run any command while subscribed).
    pub(super) fn pubsub_context(&self) -> bool {
        self.proto == Protocol::Resp2 && self.sub.as_ref().is_some_and(|s| s.count() > 0)
    }

    /// PING while subscribed (RESP2): `["pong", arg or ""]`.
    pub(super) fn subscribed_ping(&mut self, args: &[Bytes]) -> Option<Value> {
        if !self.pubsub_context() {
            return None;
        }
        let mut out = BytesMut::new();
        let arg = args.get(1).cloned().unwrap_or_default();
        encode_push(self.proto, &[Value::bulk("pong"), Value::Bulk(arg)], &mut out);
        self.raw_reply = Some(out);
        Some(Value::ok())
    }

    /// Channel permissions: rampart's ACL has none (`&pattern` is refused), so a user may use
    /// channels only when it may read every key (`allkeys`), which keyspace notifications
    /// would otherwise leak to it. The default user can; others get Redis's NOPERM.
    fn may_use_channels(&mut self) -> bool {
        self.current_user().is_some_and(|u| u.allkeys)
    }

    pub(super) fn pubsub_op(&mut self, op: Op, args: &[Bytes]) -> Value {
        match op {
            Op::Subscribe | Op::Psubscribe => self.subscribe(op == Op::Psubscribe, &args[1..]),
            Op::Unsubscribe | Op::Punsubscribe => self.unsubscribe(op == Op::Punsubscribe, &args[1..]),
            Op::Publish => {
                if !self.may_use_channels() {
                    return err(NOPERM_CHANNEL);
                }
                Value::Integer(self.app.pubsub.publish(&args[1], &args[2]) as i64)
            }
            _ => self.pubsub_introspect(args),
        }
    }

    fn subscribe(&mut self, pattern: bool, names: &[Bytes]) -> Value {
        if !self.may_use_channels() {
            return err(NOPERM_CHANNEL);
        }
        if let Some(n) = names.iter().find(|n| n.len() > CHANNEL_BYTES_MAX) {
            return err(format!(
                "ERR channel or pattern of {} bytes is over CHANNEL_BYTES_MAX ({CHANNEL_BYTES_MAX})",
                n.len()
            ));
        }
        let have = self.sub.as_ref().map_or(0, SubState::count);
        let new: HashSet<&Bytes> = names.iter().collect();
        if have + new.len() > SUBSCRIPTIONS_PER_CONN_MAX {
            return err(format!(
                "ERR too many subscriptions: SUBSCRIPTIONS_PER_CONN_MAX ({SUBSCRIPTIONS_PER_CONN_MAX}) channels and \
                 patterns per connection"
            ));
        }
        let hub = self.app.pubsub.clone();
        let id = self.id;
        let st = self.sub.get_or_insert_with(|| {
            let (subscriber, inbox) = hub.subscriber();
            SubState { hub: hub.clone(), id, subscriber, inbox, channels: HashSet::new(), patterns: HashSet::new() }
        });
        let mut out = BytesMut::new();
        for n in names {
            if pattern {
                if st.patterns.insert(n.clone()) {
                    hub.psubscribe(id, &st.subscriber, n.clone());
                }
            } else if st.channels.insert(n.clone()) {
                hub.subscribe(id, &st.subscriber, n.clone());
            }
            let kind = if pattern { "psubscribe" } else { "subscribe" };
            encode_confirmation(self.proto, kind, Some(n), st.count(), &mut out);
        }
        self.raw_reply = Some(out);
        Value::ok()
    }

    fn unsubscribe(&mut self, pattern: bool, names: &[Bytes]) -> Value {
        let kind = if pattern { "punsubscribe" } else { "unsubscribe" };
        let mut out = BytesMut::new();
        let proto = self.proto;
        match self.sub.as_mut() {
            None if names.is_empty() => encode_confirmation(proto, kind, None, 0, &mut out),
            None => {
                for n in names {
                    encode_confirmation(proto, kind, Some(n), 0, &mut out);
                }
            }
            Some(st) => {
                let all: Vec<Bytes> = if !names.is_empty() {
                    names.to_vec()
                } else if pattern {
                    st.patterns.iter().cloned().collect()
                } else {
                    st.channels.iter().cloned().collect()
                };
                if all.is_empty() {
                    encode_confirmation(proto, kind, None, st.count(), &mut out);
                }
                for n in &all {
                    if pattern {
                        if st.patterns.remove(n) {
                            st.hub.punsubscribe(st.id, n);
                        }
                    } else if st.channels.remove(n) {
                        st.hub.unsubscribe(st.id, n);
                    }
                    encode_confirmation(proto, kind, Some(n), st.count(), &mut out);
                }
            }
        }
        self.raw_reply = Some(out);
        Value::ok()
    }

    fn pubsub_introspect(&mut self, args: &[Bytes]) -> Value {
        let sub = String::from_utf8_lossy(&args[1]).to_ascii_uppercase();
        let hub = &self.app.pubsub;
        match (sub.as_str(), args.len()) {
            ("CHANNELS", 2 | 3) => {
                Value::Array(hub.channels(args.get(2).map(|p| p.as_ref())).into_iter().map(Value::Bulk).collect())
            }
            ("NUMSUB", _) => Value::Array(
                args[2..].iter().flat_map(|c| [Value::Bulk(c.clone()), Value::Integer(hub.numsub(c) as i64)]).collect(),
            ),
            ("NUMPAT", 2) => Value::Integer(hub.numpat() as i64),
            ("CHANNELS" | "NUMPAT", _) => {
                err(format!("ERR wrong number of arguments for 'pubsub|{}' command", sub.to_ascii_lowercase()))
            }
            _ => err(format!(
                "ERR unknown subcommand '{}'. Try PUBSUB HELP.",
                String::from_utf8_lossy(&args[1]).chars().take(128).collect::<String>()
            )),
        }
    }
}
