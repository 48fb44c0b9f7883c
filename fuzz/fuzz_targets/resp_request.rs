//! The RESP request parser (`rampart_resp`): any bytes, split into chunks at the points the
//! input chooses, give commands or a protocol error, never a panic, and never a command past the
//! configured limits. `parse_command` on the whole input must agree with the decoder on whether
//! the first command is complete.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_resp::{parse_command, Limits, RequestDecoder};

/// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    args_max: 16,
    bulk_bytes_max: 64,
    inline_bytes_max: 128,
    multibulk_header_bytes_max: 8,
    request_bytes_max: 512,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the input is cut into two reads.
    let (cut, input) = match data.split_first() {
        Some((c, rest)) => (*c as usize % (rest.len() + 1), rest),
        None => return,
    };
    let mut decoder = RequestDecoder::new(LIMITS);
    let mut commands = Vec::new();
    for chunk in [&input[..cut], &input[cut..]] {
        decoder.extend_from_slice(chunk);
        loop {
            match decoder.next_command() {
                Ok(Some(args)) => {
                    assert!(!args.is_empty(), "an empty command was returned");
                    assert!(args.len() <= LIMITS.args_max, "{} arguments", args.len());
                    assert!(args.iter().all(|a| a.len() <= LIMITS.bulk_bytes_max.max(LIMITS.inline_bytes_max)));
                    commands.push(args);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    if let Ok(Some((args, used))) = parse_command(input, &LIMITS) {
        assert!(used <= input.len());
        assert!(args.len() <= LIMITS.args_max);
    }
});
