//! Multi-master peer messages, decoded and validated as the peer server does, and the valid
//! Paxos requests handled by an acceptor (the core, without a network or disk); answers decoded
//! and validated as the proposer and the scan do; register records decoded as at start.
//! Nothing may panic, and a valid request never leaves a promise above the ballot ceiling.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_mm::validate::{check_replies, check_request, check_scan_page, PeerLimits};
use rampart_mm::wire::{decode, decode_register, Envelope, PeerRequest, PeerResponse};
use rampart_paxos::{Acceptor, CounterCeiling};

fuzz_target!(|data: &[u8]| {
    let limits = PeerLimits::new(&rampart_kv::Limits::default());
    // 2026-01-01, as a fixed clock.
    let ceiling = CounterCeiling::at_unix_ms(1_767_225_600_000);
    if let Ok(env) = decode::<Envelope>(data) {
        if check_request(&env, &limits).is_ok() {
            if let PeerRequest::Paxos { requests } = env.request {
                let mut acceptor = Acceptor::new();
                for request in requests {
                    let key = request.key().to_vec();
                    let _ = acceptor.handle(request, ceiling).into_parts();
                    if let Some(state) = acceptor.register(&key) {
                        assert!(ceiling.allows(state.promised), "promised {} above {ceiling}", state.promised);
                    }
                }
            }
        }
    }
    match decode::<PeerResponse>(data) {
        Ok(PeerResponse::Paxos { replies, .. }) => {
            let _ = check_replies(&replies, 16, &limits);
        }
        Ok(PeerResponse::Scan { registers, .. }) => {
            let _ = check_scan_page(&registers, b"", None, 100, &limits, ceiling);
        }
        Ok(PeerResponse::Hello { info, .. }) => {
            let _ = rampart_mm::validate::check_info(&info);
        }
        Err(_) => {}
    }
    if let Ok(state) = decode_register(data) {
        let _ = Acceptor::restore([(b"k".to_vec(), state)], ceiling);
    }
});
