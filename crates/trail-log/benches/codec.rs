//! Per-record cost of the codec: framing + CRC + chain hash (what the writer
//! does per event), decoding, and the two checksums alone.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use trail_log::codec::{self, RecordRef};
use trail_log::{Lsn, RecordHash, RecordKind};

fn record(event: &[u8]) -> RecordRef<'_> {
    RecordRef {
        lsn: Lsn(123_456_789),
        recorded_at_unix_nanos: 1_763_000_000_000_000_000,
        prev_hash: RecordHash([9; 32]),
        kind: RecordKind::Event,
        batch_last_lsn: Lsn(123_456_789),
        durable_lsn: Lsn(123_456_700),
        event_id: "0b7c6c1e-7d4a-4bfc-9a51-6b1f0e8f2a11",
        event,
    }
}

fn codec_benches(criterion: &mut Criterion) {
    let event = vec![0xabu8; 512];
    let mut group = criterion.benchmark_group("record_512B");
    group.throughput(Throughput::Elements(1));
    let mut buffer = Vec::with_capacity(4096);
    group.bench_function("encode_frame_crc_hash", |bencher| {
        bencher.iter(|| {
            buffer.clear();
            black_box(codec::encode_record_frame(
                &mut buffer,
                &record(black_box(&event)),
            ))
        });
    });
    let prepared = codec::PreparedBody::new(RecordKind::Event, record(&event).event_id, &event)
        .expect("prepare");
    group.bench_function("appender_side_prepare_head", |bencher| {
        bencher.iter(|| {
            black_box(codec::PreparedBody::new(
                RecordKind::Event,
                black_box("0b7c6c1e-7d4a-4bfc-9a51-6b1f0e8f2a11"),
                black_box(&event),
            ))
        })
    });
    let suffix = codec::RecordSuffix {
        lsn: Lsn(123_456_789),
        recorded_at_unix_nanos: 1_763_000_000_000_000_000,
        prev_hash: RecordHash([9; 32]),
        batch_last_lsn: Lsn(123_456_789),
        durable_lsn: Lsn(123_456_700),
    };
    group.bench_function("writer_side_finish_prepared_frame", |bencher| {
        // Each prepared body frames one record: clone it outside the timing.
        bencher.iter_batched_ref(
            || prepared.clone(),
            |fresh| {
                buffer.clear();
                black_box(codec::encode_prepared_frame(
                    &mut buffer,
                    fresh,
                    black_box(&suffix),
                ))
            },
            BatchSize::SmallInput,
        );
    });
    buffer.clear();
    codec::encode_record_frame(&mut buffer, &record(&event)).expect("encode");
    group.bench_function("split_frame_and_decode", |bencher| {
        bencher.iter(|| {
            let (body, _) = codec::split_frame(black_box(&buffer)).expect("frame");
            black_box(codec::decode_body(body).expect("body"))
        });
    });
    let body = &buffer[codec::FRAME_HEADER_BYTES..];
    group.bench_function("crc32_only", |bencher| {
        bencher.iter(|| black_box(crc32fast::hash(black_box(body))))
    });
    group.bench_function("blake3_chain_hash_only", |bencher| {
        bencher.iter(|| black_box(codec::record_hash(black_box(body))))
    });
    group.finish();
}

criterion_group!(benches, codec_benches);
criterion_main!(benches);
