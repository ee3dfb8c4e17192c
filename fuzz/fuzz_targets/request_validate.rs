//! Arbitrary bytes decoded as each gRPC request message and passed through
//! the server's validation: it never panics, every event it accepts passes
//! the per-field checks, and every rejection is INVALID_ARGUMENT or
//! RESOURCE_EXHAUSTED with a message saying what was wrong.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Status};
use trail_proto::server_view::AppendRequest;
use trail_proto::v1::{HeadRequest, ReadRequest, SubscribeRequest, VerifyRequest};
use trail_request::validate;
use trail_request::Limits;

fn check_rejection(status: &Status, what: &str) {
    assert!(
        matches!(status.code(), Code::InvalidArgument | Code::ResourceExhausted),
        "{what}: rejected with {:?}: {}",
        status.code(),
        status.message()
    );
    assert!(!status.message().is_empty(), "{what}: a rejection without a message");
}

fn check_log_name(name: &str, what: &str) {
    match validate::log_name(name) {
        Ok(log) => assert!(log.as_str().len() <= 64 && !log.as_str().contains('/'), "{what}: accepted {log:?}"),
        Err(status) => check_rejection(&status, what),
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(request) = AppendRequest::decode(data) {
        check_log_name(&request.log, "AppendRequest.log");
        match validate::encoded_events(&request.events, &limits) {
            Ok(events) => {
                assert_eq!(events.len(), request.events.len());
                for (index, event) in events.iter().enumerate() {
                    assert!(validate::event_fields(index, event, &limits).is_ok(), "accepted event {index} fails its field checks");
                }
            }
            Err(status) => check_rejection(&status, "AppendRequest.events"),
        }
    }
    if let Ok(request) = ReadRequest::decode(data) {
        check_log_name(&request.log, "ReadRequest.log");
    }
    if let Ok(request) = SubscribeRequest::decode(data) {
        check_log_name(&request.log, "SubscribeRequest.log");
    }
    if let Ok(request) = VerifyRequest::decode(data) {
        check_log_name(&request.log, "VerifyRequest.log");
    }
    if let Ok(request) = HeadRequest::decode(data) {
        check_log_name(&request.log, "HeadRequest.log");
    }
});
