//! One command model, three implementations that must answer alike: leader mode's state machine
//! (on a real redb store), multi-master mode's per-key change functions (the register adapter the
//! Paxos proposer applies, with `rampart_kv::plan`/`combine` around it), and a plain in-memory
//! model written here from Redis's documented semantics. The same random command sequences go
//! through all three; every reply must be identical, revisions included: multi-master applies
//! each command's changes at the command's number as their revision (what a ballot counter is
//! to it), leader mode at the command's log index, so revision CAS must answer alike too.
//!
//! Time is part of the model: a shared fake clock moves forward by a random step before each
//! command, leader mode applies every command stamped with it (`Command::At`, as its leader
//! stamps entries), multi-master mode applies each change at it (as its proposer stamps them),
//! and the model expires keys by it, as Redis 7.0 does.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rampart_kv::{combine, plan, Command, ExpireCond, Outcome, SetCond, Ttl};
use rampart_storage::{Durability, Store};

/// Redis semantics, written out directly: no shared code with `rampart_kv::apply`.
#[derive(Default)]
struct Model {
    /// key -> (value, revision of the last write, expiry in Unix ms).
    keys: BTreeMap<Vec<u8>, (Vec<u8>, u64, Option<u64>)>,
}

/// Where the fake clock starts (Unix ms).
const T0: u64 = 1_700_000_000_000;

/// A TTL's deadline at `now`: Redis clamps a negative absolute time to 0.
fn deadline(now: u64, ttl: Ttl, current: Option<u64>) -> Option<u64> {
    match ttl {
        Ttl::Clear => None,
        Ttl::Keep => current,
        Ttl::In(ms) => Some((now as i64 + ms).max(0) as u64),
        Ttl::At(at) => Some(at.max(0) as u64),
    }
}

fn redis_int(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let canonical = s.parse::<i64>().ok()?;
    // Redis only takes the canonical form: what i64's Display prints.
    (canonical.to_string() == s).then_some(canonical)
}

impl Model {
    fn apply(&mut self, rev: u64, now: u64, cmd: &Command) -> Outcome {
        if let Command::ExpireDue { keys } = cmd {
            let mut count = 0;
            for k in keys {
                if self.keys.get(k).is_some_and(|e| e.2.is_some_and(|t| t <= now)) {
                    self.keys.remove(k);
                    count += 1;
                }
            }
            return Outcome::Deleted { count };
        }
        // A key whose time has come does not exist for any command: the keys a command touches
        // are dropped first if due (Redis's lazy expiry). Others stay stored until touched or
        // removed by ExpireDue (which counts only what was still stored).
        for k in cmd.keys() {
            if self.keys.get(k).is_some_and(|e| e.2.is_some_and(|t| t <= now)) {
                self.keys.remove(k);
            }
        }
        match cmd {
            Command::Set { key, value, cond, return_old, ttl } => {
                let old = self.keys.get(key).cloned();
                let write = match cond {
                    SetCond::Always => true,
                    SetCond::IfAbsent => old.is_none(),
                    SetCond::IfPresent => old.is_some(),
                };
                if write {
                    let at = deadline(now, *ttl, old.as_ref().and_then(|o| o.2));
                    if at.is_some_and(|t| t <= now) {
                        self.keys.remove(key);
                    } else {
                        self.keys.insert(key.clone(), (value.clone(), rev, at));
                    }
                }
                Outcome::Written {
                    written: write,
                    old: if *return_old { old.as_ref().map(|o| o.0.clone()) } else { None },
                    current_revision: if write { rev } else { old.map_or(0, |o| o.1) },
                }
            }
            Command::MSet { pairs } => {
                for (k, v) in pairs {
                    self.keys.insert(k.clone(), (v.clone(), rev, None));
                }
                Outcome::Written { written: true, old: None, current_revision: rev }
            }
            Command::Del { keys } => {
                Outcome::Deleted { count: keys.iter().filter(|k| self.keys.remove(*k).is_some()).count() as u64 }
            }
            Command::Delete { key } => Outcome::Deleted { count: u64::from(self.keys.remove(key).is_some()) },
            Command::IncrBy { key, delta } => {
                let base = match self.keys.get(key) {
                    None => Some(0),
                    Some((v, _, _)) => redis_int(v),
                };
                let Some(base) = base else {
                    return Outcome::Rejected("value is not an integer or out of range".into());
                };
                let Some(n) = base.checked_add(*delta) else {
                    return Outcome::Rejected("increment or decrement would overflow".into());
                };
                // INCRBY keeps the key's expiry.
                let at = self.keys.get(key).and_then(|e| e.2);
                self.keys.insert(key.clone(), (n.to_string().into_bytes(), rev, at));
                Outcome::Integer(n)
            }
            Command::Append { key, value, value_bytes_max } => {
                let mut v = self.keys.get(key).map(|x| x.0.clone()).unwrap_or_default();
                v.extend_from_slice(value);
                let len = v.len();
                if let Some(max) = value_bytes_max.filter(|max| len > *max) {
                    return Outcome::Rejected(format!(
                        "value of {len} bytes exceeds the limit of {max} bytes (value_bytes_max)"
                    ));
                }
                let at = self.keys.get(key).and_then(|e| e.2);
                self.keys.insert(key.clone(), (v, rev, at));
                Outcome::Integer(len as i64)
            }
            Command::Cas { key, expected, new } => {
                if self.keys.get(key).map(|x| &x.0) == expected.as_ref() {
                    // A swap writes a new value, like SET: no expiry.
                    self.keys.insert(key.clone(), (new.clone(), rev, None));
                    Outcome::Swapped(true)
                } else {
                    Outcome::Swapped(false)
                }
            }
            Command::PutIfRevision { key, revision, value } => {
                let cur = self.keys.get(key).map_or(0, |x| x.1);
                if cur == *revision {
                    self.keys.insert(key.clone(), (value.clone(), rev, None));
                    Outcome::Written { written: true, old: None, current_revision: rev }
                } else {
                    Outcome::Written { written: false, old: None, current_revision: cur }
                }
            }
            Command::DeleteIfRevision { key, revision } => {
                let matches = self.keys.get(key).is_some_and(|x| x.1 == *revision);
                if matches {
                    self.keys.remove(key);
                }
                Outcome::Deleted { count: u64::from(matches) }
            }
            Command::Expire { key, ttl, cond } => {
                let Some(&(ref value, _, cur)) = self.keys.get(key) else { return Outcome::Integer(0) };
                let Some(at) = deadline(now, *ttl, cur) else { return Outcome::Integer(0) };
                // Redis 7.0: NX only without an expiry, XX only with one; no expiry is infinite
                // to GT (never greater) and LT (always less).
                let allowed = match cond {
                    ExpireCond::Always => true,
                    ExpireCond::IfNone => cur.is_none(),
                    ExpireCond::IfSome => cur.is_some(),
                    ExpireCond::IfGreater => cur.is_some_and(|c| at > c),
                    ExpireCond::IfLess => cur.is_none_or(|c| at < c),
                    ExpireCond::IfSomeAndLess => cur.is_some_and(|c| at < c),
                };
                if !allowed {
                    return Outcome::Integer(0);
                }
                if at <= now {
                    self.keys.remove(key);
                } else {
                    // A new expiry is a change of the key: it takes the command's revision.
                    let value = value.clone();
                    self.keys.insert(key.clone(), (value, rev, Some(at)));
                }
                Outcome::Integer(1)
            }
            Command::Persist { key } => match self.keys.get(key).cloned() {
                Some((value, _, Some(_))) => {
                    self.keys.insert(key.clone(), (value, rev, None));
                    Outcome::Integer(1)
                }
                _ => Outcome::Integer(0),
            },
            Command::GetEx { key, ttl } => {
                let Some((value, _, cur)) = self.keys.get(key).cloned() else { return Outcome::Value(None) };
                let at = deadline(now, *ttl, cur);
                if at == cur {
                    // No change (GETEX without an option is a GET): the key stays as it is.
                } else if at.is_some_and(|t| t <= now) {
                    self.keys.remove(key);
                } else {
                    self.keys.insert(key.clone(), (value.clone(), rev, at));
                }
                Outcome::Value(Some(value))
            }
            Command::GetDel { key } => Outcome::Value(self.keys.remove(key).map(|e| e.0)),
            Command::Batch(_)
            | Command::SystemCas { .. }
            | Command::SystemDelete { .. }
            | Command::ExpireDue { .. }
            | Command::At { .. }
            | Command::LeaseGrant { .. }
            | Command::LeaseRevoke { .. }
            | Command::PutLeased { .. } => {
                unreachable!(
                    "the generator makes no batches, system writes, stamps or lease commands (leases have their \
                     own tests); ExpireDue is handled above"
                )
            }
        }
    }
}

/// Multi-master mode's path: one change per key on registers, as the proposer applies it, at
/// revision `rev` (a proposer's ballot counter; any increasing sequence does).
#[derive(Default)]
struct Registers(BTreeMap<Vec<u8>, Option<Vec<u8>>>);

impl Registers {
    fn apply(&mut self, rev: u64, now: u64, cmd: &Command) -> Outcome {
        let (ops, how) = plan(cmd.clone()).expect("client commands have a plan");
        let mut outcomes = Vec::new();
        for (key, op) in ops {
            let current = self.0.get(&key).cloned().flatten();
            let (next, outcome) = rampart_paxos::apply_change(&op, &current, now, rev);
            self.0.insert(key, next);
            outcomes.push(outcome);
        }
        combine(how, outcomes)
    }
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "+1",
            "01",
            "-0",
            " 7",
            "9223372036854775807",
            "-9223372036854775808",
            "x",
            ""
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..4),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    let cond = prop::sample::select(vec![SetCond::Always, SetCond::IfAbsent, SetCond::IfPresent]);
    prop_oneof![
        (key(), value(), cond, any::<bool>()).prop_map(|(key, value, cond, return_old)| Command::Set {
            key,
            value,
            cond,
            return_old,
            ttl: rampart_kv::Ttl::Clear
        }),
        prop::collection::vec((key(), value()), 1..4).prop_map(|pairs| Command::MSet { pairs }),
        prop::collection::vec(key(), 1..4).prop_map(|keys| Command::Del { keys }),
        key().prop_map(|key| Command::Delete { key }),
        (key(), prop_oneof![-3i64..3, Just(i64::MAX), Just(i64::MIN)])
            .prop_map(|(key, delta)| Command::IncrBy { key, delta }),
        (key(), value(), prop::option::of(0usize..8)).prop_map(|(key, value, value_bytes_max)| Command::Append {
            key,
            value,
            value_bytes_max
        }),
        (key(), prop::option::of(value()), value()).prop_map(|(key, expected, new)| Command::Cas {
            key,
            expected,
            new
        }),
        (key(), 0u64..6, value()).prop_map(|(key, revision, value)| Command::PutIfRevision { key, revision, value }),
        (key(), 0u64..6).prop_map(|(key, revision)| Command::DeleteIfRevision { key, revision }),
        // Expiry. TTLs are of the order of the clock's steps, so keys do expire mid-sequence.
        (key(), value(), cond_set(), any::<bool>(), set_ttl())
            .prop_map(|(key, value, cond, return_old, ttl)| { Command::Set { key, value, cond, return_old, ttl } }),
        (key(), expire_ttl(), expire_cond()).prop_map(|(key, ttl, cond)| Command::Expire { key, ttl, cond }),
        key().prop_map(|key| Command::Persist { key }),
        (key(), getex_ttl()).prop_map(|(key, ttl)| Command::GetEx { key, ttl }),
        key().prop_map(|key| Command::GetDel { key }),
        prop::collection::vec(key(), 1..4).prop_map(|keys| Command::ExpireDue { keys }),
    ]
}

fn cond_set() -> impl Strategy<Value = SetCond> {
    prop::sample::select(vec![SetCond::Always, SetCond::IfAbsent, SetCond::IfPresent])
}

/// SET's TTLs: EX/PX (positive), KEEPTTL, none, and EXAT/PXAT around the clock's range (some in
/// the past: the key is then gone at once).
fn set_ttl() -> impl Strategy<Value = Ttl> {
    prop_oneof![
        (1i64..300).prop_map(Ttl::In),
        Just(Ttl::Keep),
        Just(Ttl::Clear),
        (0i64..2_000).prop_map(|d| Ttl::At(T0 as i64 + d)),
    ]
}

/// EXPIRE's: any relative time, negative and zero included (they delete), or an absolute one.
fn expire_ttl() -> impl Strategy<Value = Ttl> {
    prop_oneof![(-50i64..300).prop_map(Ttl::In), (-10i64..2_000).prop_map(|d| Ttl::At(T0 as i64 + d))]
}

fn expire_cond() -> impl Strategy<Value = ExpireCond> {
    prop::sample::select(vec![
        ExpireCond::Always,
        ExpireCond::IfNone,
        ExpireCond::IfSome,
        ExpireCond::IfGreater,
        ExpireCond::IfLess,
        ExpireCond::IfSomeAndLess,
    ])
}

/// GETEX's options: none (Keep), PERSIST (Clear), EX/PX, EXAT/PXAT.
fn getex_ttl() -> impl Strategy<Value = Ttl> {
    prop_oneof![
        Just(Ttl::Keep),
        Just(Ttl::Clear),
        (1i64..300).prop_map(Ttl::In),
        (0i64..2_000).prop_map(|d| Ttl::At(T0 as i64 + d)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn both_modes_answer_like_the_model(cmds in prop::collection::vec((command(), 0u64..120), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let mut model = Model::default();
        let mut registers = Registers::default();
        let mut now = T0;
        for (i, (cmd, step)) in cmds.iter().enumerate() {
            now += step;
            let rev = i as u64 + 1;
            let expected = model.apply(rev, now, cmd);
            let stamped = Command::At { now_ms: now, cmd: Box::new(cmd.clone()) };
            let leader = store
                .write(Durability::Lazy, |b| rampart_raft::state_machine::apply(b, rev, &stamped, &mut Vec::new()))
                .unwrap();
            prop_assert_eq!(leader.revision, rev);
            prop_assert_eq!(&leader.outcome, &expected, "leader mode, command {} {:?}", i, cmd);
            let mm = registers.apply(rev, now, cmd);
            prop_assert_eq!(&mm, &expected, "multi-master, command {} {:?}", i, cmd);
        }
    }
}
