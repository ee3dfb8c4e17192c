//! Property tests of the record codec: any record round-trips through its
//! frame byte for byte, its hash is a function of the stored bytes, and any
//! single-bit change of a frame is caught by the CRC.

use proptest::prelude::*;
use trail_log::codec::{self, Body, Record, Seal};
use trail_log::{Lsn, RecordHash, RecordKind};

fn record() -> impl Strategy<Value = Record> {
    (
        (1u64..u64::MAX, any::<i64>(), any::<[u8; 32]>()),
        prop_oneof![
            Just(RecordKind::Event),
            (1u64..u64::MAX).prop_map(|lsn| RecordKind::CompensationV1 {
                compensates: Lsn(lsn)
            }),
            (1u64..u64::MAX, any::<[u8; 32]>()).prop_map(|(lsn, hash)| {
                RecordKind::Compensation {
                    compensates: Lsn(lsn),
                    compensates_hash: RecordHash(hash),
                }
            })
        ],
        (any::<u64>(), any::<u64>()),
        ".{0,40}",
        prop::collection::vec(any::<u8>(), 0..2048),
    )
        .prop_map(
            |((lsn, recorded_at, prev_hash), kind, (batch_extra, durable), event_id, event)| {
                Record {
                    lsn: Lsn(lsn),
                    recorded_at_unix_nanos: recorded_at,
                    prev_hash: RecordHash(prev_hash),
                    kind,
                    batch_last_lsn: Lsn(lsn.saturating_add(batch_extra % 1000)),
                    durable_lsn: Lsn(durable % lsn),
                    event_id,
                    event,
                }
            },
        )
}

proptest! {
    #[test]
    fn a_record_round_trips_through_its_frame(record in record()) {
        let mut frame = Vec::new();
        let hash = codec::encode_record_frame(&mut frame, &record.as_ref()).expect("encodes");
        let (body, frame_len) = codec::split_frame(&frame).expect("a valid frame");
        prop_assert_eq!(frame_len, frame.len());
        prop_assert_eq!(codec::record_hash(body), hash);
        let decoded = codec::decode_body(body).expect("decodes");
        prop_assert_eq!(&decoded, &Body::Record(record));
        prop_assert_eq!(codec::encode_body_as(&decoded, body[0]).expect("re-encodes"), body.to_vec());
    }

    #[test]
    fn a_seal_round_trips(first in 1u64..1 << 60, count in 1u64..1 << 20, hash in any::<[u8; 32]>(), at in any::<i64>()) {
        let seal = Seal { first_lsn: Lsn(first), last_lsn: Lsn(first + count - 1), record_count: count, last_hash: RecordHash(hash), sealed_at_unix_nanos: at };
        let mut frame = Vec::new();
        codec::encode_seal_frame(&mut frame, &seal).expect("encodes");
        let (body, _) = codec::split_frame(&frame).expect("a valid frame");
        prop_assert_eq!(codec::decode_body(body).expect("decodes"), Body::Seal(seal));
    }

    #[test]
    fn any_single_bit_flip_in_a_frame_is_detected(record in record(), position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut frame = Vec::new();
        codec::encode_record_frame(&mut frame, &record.as_ref()).expect("encodes");
        let index = position.index(frame.len());
        frame[index] ^= 1 << bit;
        match codec::split_frame(&frame) {
            Err(_) => {}
            Ok((body, _)) => {
                // Only a flip in the length can still leave a CRC-valid prefix,
                // and then the body is not the record that was written.
                prop_assert!(index < 4, "a flip at byte {} went unnoticed", index);
                prop_assert_ne!(codec::decode_body(body).ok(), Some(Body::Record(record)));
            }
        }
    }
}

proptest! {
    /// The writer's split path (head prepared on the appending thread, tail
    /// and hash finished by the writer) produces the very bytes and hash of
    /// encoding the whole record at once.
    #[test]
    fn a_prepared_frame_is_the_whole_frame(record in record()) {
        // Format-1 kinds are read, never written (a unit test in codec.rs).
        prop_assume!(record.kind.body_version() == codec::BODY_FORMAT_VERSION);
        let mut whole = Vec::new();
        let whole_hash = codec::encode_record_frame(&mut whole, &record.as_ref()).expect("encodes");
        let mut prepared = codec::PreparedBody::new(record.kind, &record.event_id, &record.event).expect("prepares");
        let suffix = codec::RecordSuffix {
            lsn: record.lsn,
            recorded_at_unix_nanos: record.recorded_at_unix_nanos,
            prev_hash: record.prev_hash,
            batch_last_lsn: record.batch_last_lsn,
            durable_lsn: record.durable_lsn,
        };
        let mut split = Vec::new();
        let split_hash = codec::encode_prepared_frame(&mut split, &mut prepared, &suffix).expect("encodes");
        prop_assert_eq!(split, whole);
        prop_assert_eq!(split_hash, whole_hash);
    }
}
