//! Pub/sub and Redis keyspace notifications, node-local as in a single redis-server.
//!
//! - [`Hub`]: this node's subscriptions. `PUBLISH` delivers to this node's subscribers only (a
//!   single Redis has no other nodes; rampart does not relay messages between nodes).
//! - Every subscriber has a bounded outbox ([`SUBSCRIBER_OUTPUT_BYTES_MAX`]): one that falls
//!   behind is cut off (its connection is closed), never buffered without bound.
//! - [`NotifyFlags`]: `notify-keyspace-events` (Redis's letters). When on, one watch per node
//!   ([`Replica::watch`] of every key) feeds `__keyspace@0__:<key>` and `__keyevent@0__:<event>`
//!   for every write applied on this node, whichever node took it: a cluster-wide feed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use rampart_kv::{Event, NotifyClass, Replica, WatchError, WatchFilter, WatchMessage};
use rampart_resp::{encode, Protocol, Value};
use tokio::sync::mpsc;

use crate::glob::Glob;

/// Most bytes of messages queued for one subscriber that has not taken them (Redis's
/// `client-output-buffer-limit pubsub` hard limit, 32 MB). Past it the subscriber is cut off
/// and its connection closed. Redis's soft limit (8 MB for 60 s) is not applied.
pub const SUBSCRIBER_OUTPUT_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Most channels plus patterns one connection may subscribe to; more are refused with an error
/// naming this limit (Redis has no such limit).
pub const SUBSCRIPTIONS_PER_CONN_MAX: usize = 10_000;
/// Longest channel name or pattern accepted by SUBSCRIBE / PSUBSCRIBE.
pub const CHANNEL_BYTES_MAX: usize = 64 * 1024;
/// Bytes counted for each queued message beyond its channel, pattern and payload (the frame
/// and bookkeeping), so a flood of empty messages is bounded too.
const MESSAGE_OVERHEAD_BYTES: usize = 64;
/// How often the notification watch reports progress (and so notices the hub is gone).
const NOTIFY_PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Wait before restarting the notification watch after it could not start or ended.
const NOTIFY_RESTART_DELAY: Duration = Duration::from_millis(200);

/// One message for one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The pattern it matched (`pmessage`), or `None` (`message`).
    pub pattern: Option<Bytes>,
    pub channel: Bytes,
    pub payload: Bytes,
}

impl Push {
    fn cost(&self) -> usize {
        self.pattern.as_ref().map_or(0, Bytes::len) + self.channel.len() + self.payload.len() + MESSAGE_OVERHEAD_BYTES
    }

    /// The frame as redis-server 7.0 sends it: an array in RESP2, a push (`>`) in RESP3.
    pub fn encode(&self, proto: Protocol, out: &mut BytesMut) {
        match &self.pattern {
            Some(p) => encode_push(
                proto,
                &[
                    Value::bulk("pmessage"),
                    Value::Bulk(p.clone()),
                    Value::Bulk(self.channel.clone()),
                    Value::Bulk(self.payload.clone()),
                ],
                out,
            ),
            None => encode_push(
                proto,
                &[Value::bulk("message"), Value::Bulk(self.channel.clone()), Value::Bulk(self.payload.clone())],
                out,
            ),
        }
    }
}

/// Encodes `items` as one pub/sub frame: `*N` in RESP2, `>N` in RESP3.
pub fn encode_push(proto: Protocol, items: &[Value], out: &mut BytesMut) {
    out.put_u8(if proto == Protocol::Resp3 { b'>' } else { b'*' });
    out.put_slice(items.len().to_string().as_bytes());
    out.put_slice(b"\r\n");
    for item in items {
        encode(item, proto, out);
    }
}

/// The (un)subscribe confirmation: `[kind, name or nil, count]`.
pub fn encode_confirmation(proto: Protocol, kind: &str, name: Option<&Bytes>, count: usize, out: &mut BytesMut) {
    let name = name.map_or(Value::Null, |n| Value::Bulk(n.clone()));
    encode_push(proto, &[Value::bulk(kind), name, Value::Integer(count as i64)], out);
}

#[derive(Default)]
struct Meter {
    queued: AtomicUsize,
    cut_off: AtomicBool,
}

/// The sending side of a subscriber's outbox (held by the hub).
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<Push>,
    meter: Arc<Meter>,
}

impl Outbox {
    /// Queues `push` unless the subscriber was cut off; cuts it off when its queue would pass
    /// [`SUBSCRIBER_OUTPUT_BYTES_MAX`]. True when queued.
    fn offer(&self, push: Push) -> bool {
        if self.meter.cut_off.load(Ordering::Relaxed) {
            return false;
        }
        let cost = push.cost();
        let before = self.meter.queued.fetch_add(cost, Ordering::Relaxed);
        if before + cost > SUBSCRIBER_OUTPUT_BYTES_MAX {
            self.meter.cut_off.store(true, Ordering::Relaxed);
            self.meter.queued.fetch_sub(cost, Ordering::Relaxed);
            return false;
        }
        self.tx.send(push).is_ok()
    }
}

/// A connection's receiving side.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Push>,
    meter: Arc<Meter>,
}

impl Inbox {
    /// The next message; `Err` once the subscriber was cut off for falling behind.
    pub async fn recv(&mut self) -> Result<Push, String> {
        if self.meter.cut_off.load(Ordering::Relaxed) {
            return Err(cut_off_reason());
        }
        match self.rx.recv().await {
            Some(p) => {
                self.meter.queued.fetch_sub(p.cost(), Ordering::Relaxed);
                Ok(p)
            }
            None => Err("the pub/sub hub is gone".into()),
        }
    }

    /// A message already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Push> {
        let p = self.rx.try_recv().ok()?;
        self.meter.queued.fetch_sub(p.cost(), Ordering::Relaxed);
        Some(p)
    }
}

fn cut_off_reason() -> String {
    format!(
        "the subscriber fell behind: more than SUBSCRIBER_OUTPUT_BYTES_MAX ({SUBSCRIBER_OUTPUT_BYTES_MAX} bytes) of \
         messages queued"
    )
}

#[derive(Default)]
struct Subs {
    channels: HashMap<Bytes, HashMap<u64, Outbox>>,
    patterns: HashMap<Bytes, (Glob, HashMap<u64, Outbox>)>,
}

/// The `notify-keyspace-events` classes, as Redis 7.0 spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotifyFlags(pub u32);

const K: u32 = 1;
const E: u32 = 2;
/// Class letters in the order Redis prints them, and their bits.
const CLASSES: &[(u8, u32)] = &[
    (b'g', 1 << 2),
    (b'$', 1 << 3),
    (b'l', 1 << 4),
    (b's', 1 << 5),
    (b'h', 1 << 6),
    (b'z', 1 << 7),
    (b'x', 1 << 8),
    (b'e', 1 << 9),
    (b't', 1 << 10),
    (b'd', 1 << 11),
    (b'n', 1 << 12),
];
const KEY_MISS: u32 = 1 << 13;
const NEW: u32 = 1 << 12;
/// `A`: every class but `n` and `m` (Redis's `g$lshzxetd`).
const ALL: u32 = ((1 << 12) - 1) & !(K | E);

impl NotifyFlags {
    /// Parses Redis's letters (any order, repeats allowed; `""` is off). The error is Redis's
    /// for an unknown letter; `n` (new key) and `m` (key miss) are refused because rampart does
    /// not produce those events.
    pub fn parse(s: &[u8]) -> Result<NotifyFlags, String> {
        let mut f = 0;
        for &c in s {
            f |= match c {
                b'A' => ALL,
                b'K' => K,
                b'E' => E,
                b'm' => KEY_MISS,
                _ => match CLASSES.iter().find(|(l, _)| *l == c) {
                    Some((_, bit)) => *bit,
                    None => return Err("Invalid event class character. Use 'Ag$lshzxeKEtmdn'.".into()),
                },
            };
        }
        if f & (NEW | KEY_MISS) != 0 {
            return Err("rampart does not produce 'n' (new key) or 'm' (key miss) events".into());
        }
        Ok(NotifyFlags(f))
    }

    /// Redis's normal form (`CONFIG GET`): `A` or the class letters, then `K`, `E`, `m`.
    pub fn render(self) -> String {
        let f = self.0;
        let mut s = String::new();
        if f & ALL == ALL {
            s.push('A');
        } else {
            for (l, bit) in CLASSES {
                if f & bit != 0 {
                    s.push(*l as char);
                }
            }
        }
        for (l, bit) in [('K', K), ('E', E), ('m', KEY_MISS)] {
            if f & bit != 0 {
                s.push(l);
            }
        }
        s
    }

    fn class(c: NotifyClass) -> u32 {
        match c {
            NotifyClass::Generic => 1 << 2,
            NotifyClass::String => 1 << 3,
            NotifyClass::Expired => 1 << 8,
        }
    }

    /// The `(channel, message)` pairs Redis publishes for `event`, in its order.
    pub fn messages(self, event: &Event) -> Vec<(Bytes, Bytes)> {
        let mut out = Vec::new();
        if self.0 & (K | E) == 0 {
            return out;
        }
        for (class, name) in event.cause.redis_events() {
            if self.0 & Self::class(*class) == 0 {
                continue;
            }
            if self.0 & K != 0 {
                let mut ch = b"__keyspace@0__:".to_vec();
                ch.extend_from_slice(&event.key);
                out.push((Bytes::from(ch), Bytes::from_static(name.as_bytes())));
            }
            if self.0 & E != 0 {
                out.push((Bytes::from(format!("__keyevent@0__:{name}")), Bytes::copy_from_slice(&event.key)));
            }
        }
        out
    }
}

/// This node's subscriptions and its keyspace-notification feed.
pub struct Hub {
    subs: Mutex<Subs>,
    flags: AtomicU32,
    /// Serialises starting the feed; true once it runs.
    feed: tokio::sync::Mutex<bool>,
}

impl Hub {
    pub fn new(flags: NotifyFlags) -> Hub {
        Hub { subs: Mutex::new(Subs::default()), flags: AtomicU32::new(flags.0), feed: tokio::sync::Mutex::new(false) }
    }

    /// A new subscriber's outbox (kept by its connection) and inbox.
    pub fn subscriber(&self) -> (Subscriber, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let meter = Arc::new(Meter::default());
        (Subscriber { outbox: Outbox { tx, meter: meter.clone() } }, Inbox { rx, meter })
    }

    pub fn subscribe(&self, id: u64, sub: &Subscriber, channel: Bytes) {
        self.subs.lock().channels.entry(channel).or_default().insert(id, sub.outbox.clone());
    }

    pub fn unsubscribe(&self, id: u64, channel: &Bytes) {
        let mut subs = self.subs.lock();
        if let Some(m) = subs.channels.get_mut(channel) {
            m.remove(&id);
            if m.is_empty() {
                subs.channels.remove(channel);
            }
        }
    }

    pub fn psubscribe(&self, id: u64, sub: &Subscriber, pattern: Bytes) {
        let mut subs = self.subs.lock();
        let entry = subs.patterns.entry(pattern.clone()).or_insert_with(|| (Glob::new(&pattern), HashMap::new()));
        entry.1.insert(id, sub.outbox.clone());
    }

    pub fn punsubscribe(&self, id: u64, pattern: &Bytes) {
        let mut subs = self.subs.lock();
        if let Some((_, m)) = subs.patterns.get_mut(pattern) {
            m.remove(&id);
            if m.is_empty() {
                subs.patterns.remove(pattern);
            }
        }
    }

    /// Delivers `payload` to this node's subscribers of `channel` and of patterns matching it;
    /// answers how many got it (PUBLISH's reply).
    pub fn publish(&self, channel: &Bytes, payload: &Bytes) -> usize {
        let subs = self.subs.lock();
        let mut n = 0;
        if let Some(m) = subs.channels.get(channel) {
            for o in m.values() {
                let push = Push { pattern: None, channel: channel.clone(), payload: payload.clone() };
                n += usize::from(o.offer(push));
            }
        }
        for (pattern, (glob, m)) in &subs.patterns {
            if glob.matches(channel) {
                for o in m.values() {
                    let push =
                        Push { pattern: Some(pattern.clone()), channel: channel.clone(), payload: payload.clone() };
                    n += usize::from(o.offer(push));
                }
            }
        }
        n
    }

    /// PUBSUB CHANNELS: channels with at least one subscriber, matching `pattern` if given.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let glob = pattern.map(Glob::new);
        let subs = self.subs.lock();
        subs.channels.keys().filter(|c| glob.as_ref().is_none_or(|g| g.matches(c))).cloned().collect()
    }

    /// PUBSUB NUMSUB: subscribers of `channel`.
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.subs.lock().channels.get(channel).map_or(0, HashMap::len)
    }

    /// PUBSUB NUMPAT: distinct patterns subscribed to.
    pub fn numpat(&self) -> usize {
        self.subs.lock().patterns.len()
    }

    pub fn flags(&self) -> NotifyFlags {
        NotifyFlags(self.flags.load(Ordering::Relaxed))
    }

    /// Sets `notify-keyspace-events`. Turning it on starts this node's feed if it is not
    /// running; a replica without watches (multi-master mode) refuses, and nothing changes.
    pub async fn set_flags(self: &Arc<Self>, flags: NotifyFlags, replica: &Arc<dyn Replica>) -> Result<(), String> {
        if flags.0 != 0 {
            self.start_feed(replica).await?;
        }
        self.flags.store(flags.0, Ordering::Relaxed);
        Ok(())
    }

    /// Starts the feed unless it runs (it then runs for the hub's life, publishing nothing
    /// while notifications are off).
    pub async fn start_feed(self: &Arc<Self>, replica: &Arc<dyn Replica>) -> Result<(), String> {
        let mut running = self.feed.lock().await;
        if *running {
            return Ok(());
        }
        let stream = match replica.watch(WatchFilter::Prefix(Vec::new()), None, NOTIFY_PROGRESS_EVERY).await {
            Ok(s) => s,
            Err(WatchError::Unsupported(m)) => return Err(format!("keyspace notifications: {m}")),
            Err(e) => return Err(format!("keyspace notifications could not start: {e}")),
        };
        *running = true;
        tokio::spawn(feed(Arc::downgrade(self), replica.clone(), stream));
        Ok(())
    }
}

/// The notification feed: publishes every event's notifications; after a cut-off (or an end)
/// resumes from the first revision it did not see.
async fn feed(hub: Weak<Hub>, replica: Arc<dyn Replica>, mut stream: Box<dyn rampart_kv::EventStream>) {
    let mut next_rev: Option<u64> = None;
    loop {
        match stream.next().await {
            Some(WatchMessage::Events(events)) => {
                let Some(hub) = hub.upgrade() else { return };
                let flags = hub.flags();
                for ev in &events {
                    next_rev = Some(ev.revision + 1);
                    for (ch, msg) in flags.messages(ev) {
                        hub.publish(&ch, &msg);
                    }
                }
                continue;
            }
            Some(WatchMessage::Progress { revision }) => {
                if hub.strong_count() == 0 {
                    return;
                }
                next_rev = Some(revision + 1);
                continue;
            }
            Some(WatchMessage::CutOff { resume_from, reason }) => {
                tracing::warn!(resume_from, %reason, "keyspace-notification watch was cut off; resuming");
                next_rev = Some(resume_from);
            }
            None => tracing::warn!(?next_rev, "keyspace-notification watch ended; resuming"),
        }
        // Restart, from where the last one stopped where possible.
        loop {
            if hub.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(NOTIFY_RESTART_DELAY).await;
            match replica.watch(WatchFilter::Prefix(Vec::new()), next_rev, NOTIFY_PROGRESS_EVERY).await {
                Ok(s) => {
                    stream = s;
                    break;
                }
                Err(WatchError::Compacted { requested, oldest }) => {
                    tracing::warn!(
                        requested,
                        oldest,
                        "keyspace notifications missed compacted history; resuming at the oldest revision kept"
                    );
                    next_rev = Some(oldest);
                }
                Err(e) => tracing::warn!(error = %e, "keyspace-notification watch could not restart; retrying"),
            }
        }
    }
}

/// Starts the feed for `--notify-keyspace-events`, retrying while the replica cannot watch yet
/// (a node still joining); a replica without watches is logged once and left alone.
pub async fn start_feed_at_boot(hub: Arc<Hub>, replica: Arc<dyn Replica>) {
    loop {
        match hub.start_feed(&replica).await {
            Ok(()) => return,
            Err(m) if m.contains("leader mode") => {
                tracing::error!(error = %m, "--notify-keyspace-events is ignored");
                return;
            }
            Err(m) => {
                tracing::warn!(error = %m, "keyspace notifications not started yet; retrying");
                tokio::time::sleep(NOTIFY_RESTART_DELAY).await;
            }
        }
    }
}

/// A connection's hold on its outbox.
pub struct Subscriber {
    outbox: Outbox,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_kv::{Cause, EventKind};

    #[test]
    fn flags_parse_and_render_like_redis() {
        let r = |s: &str| NotifyFlags::parse(s.as_bytes()).map(NotifyFlags::render);
        assert_eq!(r("").unwrap(), "");
        assert_eq!(r("g$lshzxetd").unwrap(), "A");
        assert_eq!(r("KEA").unwrap(), "AKE");
        assert_eq!(r("Ex").unwrap(), "xE");
        assert_eq!(r("EKg$").unwrap(), "g$KE");
        assert_eq!(r("xxK").unwrap(), "xK");
        assert_eq!(r("q").unwrap_err(), "Invalid event class character. Use 'Ag$lshzxeKEtmdn'.");
        assert!(r("Kn").unwrap_err().contains("'n'"));
        assert!(r("Am").unwrap_err().contains("'m'"));
    }

    fn ev(cause: Cause, key: &str) -> Event {
        Event { revision: 1, kind: EventKind::Put, key: key.into(), value: vec![], expires_at: None, cause }
    }

    #[test]
    fn notifications_follow_the_classes_in_redis_order() {
        let f = NotifyFlags::parse(b"KEA").unwrap();
        let m = f.messages(&ev(Cause::SetWithExpiry, "k"));
        let m: Vec<(&[u8], &[u8])> = m.iter().map(|(a, b)| (a.as_ref(), b.as_ref())).collect();
        assert_eq!(
            m,
            vec![
                (&b"__keyspace@0__:k"[..], &b"set"[..]),
                (b"__keyevent@0__:set", b"k"),
                (b"__keyspace@0__:k", b"expire"),
                (b"__keyevent@0__:expire", b"k"),
            ]
        );
        let only_x = NotifyFlags::parse(b"Ex").unwrap();
        assert!(only_x.messages(&ev(Cause::Set, "k")).is_empty());
        assert_eq!(only_x.messages(&ev(Cause::Expired, "k")).len(), 1);
        assert!(NotifyFlags::parse(b"A").unwrap().messages(&ev(Cause::Set, "k")).is_empty(), "no K or E: nothing");
    }

    #[test]
    fn frames_are_redis_7_0s() {
        let mut out = BytesMut::new();
        encode_confirmation(Protocol::Resp2, "subscribe", Some(&Bytes::from("a")), 1, &mut out);
        encode_confirmation(Protocol::Resp2, "unsubscribe", None, 0, &mut out);
        assert_eq!(&out[..], b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
        let mut out = BytesMut::new();
        Push { pattern: None, channel: "a".into(), payload: "m".into() }.encode(Protocol::Resp3, &mut out);
        assert_eq!(&out[..], b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nm\r\n");
        let mut out = BytesMut::new();
        Push { pattern: Some("a*".into()), channel: "ab".into(), payload: "m".into() }
            .encode(Protocol::Resp2, &mut out);
        assert_eq!(&out[..], b"*4\r\n$8\r\npmessage\r\n$2\r\na*\r\n$2\r\nab\r\n$1\r\nm\r\n");
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_cut_off() {
        let hub = Hub::new(NotifyFlags::default());
        let (sub, mut inbox) = hub.subscriber();
        hub.subscribe(1, &sub, "c".into());
        let big = Bytes::from(vec![b'x'; 1024 * 1024]);
        let mut delivered = 0;
        for _ in 0..40 {
            delivered += hub.publish(&"c".into(), &big);
        }
        assert!((31..40).contains(&delivered), "delivered {delivered}");
        assert!(inbox.try_recv().is_some());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(rt.block_on(inbox.recv()).unwrap_err().contains("SUBSCRIBER_OUTPUT_BYTES_MAX"));
    }
}
