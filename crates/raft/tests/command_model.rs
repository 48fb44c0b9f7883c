//! One command model, three implementations that must answer alike: leader mode's state machine
//! (on a real redb store), multi-master mode's per-key change functions (the register adapter the
//! Paxos proposer applies, with `rampart_kv::plan`/`combine` around it), and a plain in-memory
//! model written here from Redis's documented semantics. The same random command sequences go
//! through all three; every reply must be identical (multi-master has no revisions, so its
//! revisions are compared as 0, and it refuses revision CAS before proposing).

use std::collections::BTreeMap;

use proptest::prelude::*;
use rampart_kv::{combine, plan, Command, Outcome, SetCond};
use rampart_storage::{Durability, Store};

/// Redis semantics, written out directly: no shared code with `rampart_kv::apply`.
#[derive(Default)]
struct Model {
    keys: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
}

fn redis_int(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let canonical = s.parse::<i64>().ok()?;
    // Redis only takes the canonical form: what i64's Display prints.
    (canonical.to_string() == s).then_some(canonical)
}

impl Model {
    fn apply(&mut self, rev: u64, cmd: &Command) -> Outcome {
        match cmd {
            Command::Set { key, value, cond, return_old, .. } => {
                let old = self.keys.get(key).cloned();
                let write = match cond {
                    SetCond::Always => true,
                    SetCond::IfAbsent => old.is_none(),
                    SetCond::IfPresent => old.is_some(),
                };
                if write {
                    self.keys.insert(key.clone(), (value.clone(), rev));
                }
                Outcome::Written {
                    written: write,
                    old: if *return_old { old.as_ref().map(|o| o.0.clone()) } else { None },
                    current_revision: if write { rev } else { old.map_or(0, |o| o.1) },
                }
            }
            Command::MSet { pairs } => {
                for (k, v) in pairs {
                    self.keys.insert(k.clone(), (v.clone(), rev));
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
                    Some((v, _)) => redis_int(v),
                };
                let Some(base) = base else {
                    return Outcome::Rejected("value is not an integer or out of range".into());
                };
                let Some(n) = base.checked_add(*delta) else {
                    return Outcome::Rejected("increment or decrement would overflow".into());
                };
                self.keys.insert(key.clone(), (n.to_string().into_bytes(), rev));
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
                self.keys.insert(key.clone(), (v, rev));
                Outcome::Integer(len as i64)
            }
            Command::Cas { key, expected, new } => {
                if self.keys.get(key).map(|x| &x.0) == expected.as_ref() {
                    self.keys.insert(key.clone(), (new.clone(), rev));
                    Outcome::Swapped(true)
                } else {
                    Outcome::Swapped(false)
                }
            }
            Command::PutIfRevision { key, revision, value } => {
                let cur = self.keys.get(key).map_or(0, |x| x.1);
                if cur == *revision {
                    self.keys.insert(key.clone(), (value.clone(), rev));
                    Outcome::Written { written: true, old: None, current_revision: rev }
                } else {
                    Outcome::Written { written: false, old: None, current_revision: cur }
                }
            }
            Command::Batch(_)
            | Command::SystemCas { .. }
            | Command::SystemDelete { .. }
            | Command::Expire { .. }
            | Command::Persist { .. }
            | Command::GetEx { .. }
            | Command::GetDel { .. }
            | Command::ExpireDue { .. }
            | Command::At { .. } => {
                unreachable!("the generator makes no batches, system writes or expiry commands")
            }
        }
    }
}

/// Multi-master mode's path: one change per key on registers, as the proposer applies it.
#[derive(Default)]
struct Registers(BTreeMap<Vec<u8>, Option<Vec<u8>>>);

impl Registers {
    fn apply(&mut self, cmd: &Command) -> Outcome {
        let (ops, how) = plan(cmd.clone()).expect("client commands have a plan");
        let mut outcomes = Vec::new();
        for (key, op) in ops {
            let current = self.0.get(&key).cloned().flatten();
            let (next, outcome) = rampart_paxos::apply_change(&op, &current);
            self.0.insert(key, next);
            outcomes.push(outcome);
        }
        combine(how, outcomes)
    }
}

/// The same outcome with every revision zeroed (multi-master mode has none).
fn without_revisions(o: Outcome) -> Outcome {
    match o {
        Outcome::Written { written, old, .. } => Outcome::Written { written, old, current_revision: 0 },
        other => other,
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
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn both_modes_answer_like_the_model(cmds in prop::collection::vec(command(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let mut model = Model::default();
        // Multi-master refuses revision CAS unproposed, so its model never sees those commands.
        let mut mm_model = Model::default();
        let mut registers = Registers::default();
        for (i, cmd) in cmds.iter().enumerate() {
            let rev = i as u64 + 1;
            let expected = model.apply(rev, cmd);
            let leader = store
                .write(Durability::Lazy, |b| rampart_raft::state_machine::apply(b, rev, cmd))
                .unwrap();
            prop_assert_eq!(leader.revision, rev);
            prop_assert_eq!(&leader.outcome, &expected, "leader mode, command {} {:?}", i, cmd);
            if !cmd.needs_revisions() {
                let expected = mm_model.apply(rev, cmd);
                let mm = registers.apply(cmd);
                prop_assert_eq!(without_revisions(mm), without_revisions(expected), "multi-master, command {} {:?}", i, cmd);
            }
        }
    }
}
