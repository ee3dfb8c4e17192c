//! Arbitrary bytes into the frame and body decoders.
//!
//! Checks: never panics; never makes one allocation larger than the frame
//! bound (`FRAME_BODY_BYTES_MAX`, plus a small constant), so a damaged length
//! cannot make a reader allocate without limit; accepts only frames whose CRC matches and whose length
//! is within the bound; anything accepted re-encodes to exactly the same
//! body bytes (the hash chain is over stored bytes, so two encodings of one
//! record would be two different records).
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use trail_log::codec::{decode_body, encode_body_as, split_frame, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES};

/// Records the largest single allocation, so the target can bound it.
struct LargestAllocation;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Slack for error messages and small fixed-size values.
const ALLOCATION_SLACK_BYTES: usize = 4096;

fn check_allocations(input_len: usize, what: &str) {
    let largest = LARGEST.swap(0, Ordering::Relaxed);
    assert!(
        largest <= FRAME_BODY_BYTES_MAX + ALLOCATION_SLACK_BYTES,
        "{what} allocated {largest} bytes at once from {input_len} input bytes"
    );
}

fuzz_target!(|data: &[u8]| {
    // 1. As a frame.
    LARGEST.store(0, Ordering::Relaxed);
    let split = split_frame(data);
    check_allocations(data.len(), "split_frame");
    if let Ok((body, frame_len)) = split {
        assert_eq!(frame_len, FRAME_HEADER_BYTES + body.len());
        assert!(frame_len <= data.len());
        assert!(!body.is_empty() && body.len() <= FRAME_BODY_BYTES_MAX);
        let declared = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        assert_eq!(declared, body.len());
        let stored = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
        assert_eq!(stored, crc32fast::hash(body), "accepted a frame whose CRC does not match");
        assert_eq!(body.as_ptr(), data[FRAME_HEADER_BYTES..].as_ptr());
        check_body(body);
    }
    // 2. As a body directly: the CRC makes random frames almost never reach
    //    the body decoder, so feed it the raw bytes too.
    check_body(data);
});

fn check_body(body: &[u8]) {
    LARGEST.store(0, Ordering::Relaxed);
    let decoded = decode_body(body);
    check_allocations(body.len(), "decode_body");
    if let Ok(decoded) = decoded {
        match encode_body_as(&decoded, body[0]) {
            Ok(reencoded) => assert_eq!(reencoded, body, "an accepted body re-encodes differently: {decoded:?}"),
            Err(error) => panic!("an accepted body does not re-encode: {error}"),
        }
    }
}
