//! One bit flipped anywhere in any record of a valid log (two sealed
//! segments and an active one, written by the real engine) is always
//! detected: the log refuses to open with DATA_LOSS, or verify reports it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trail_sim::damage::check_bit_flip;

fuzz_target!(|bit: u64| {
    if let Err(violation) = check_bit_flip(bit) {
        panic!("{violation}");
    }
});
