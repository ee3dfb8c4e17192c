//! Requests the typed client cannot send, through a raw client that writes
//! each gRPC message's bytes itself: bytes that do not decode, and messages
//! over the decoding limit, alone and in the middle of an `AppendStream`.
//! Each must end with an error status that says what and where, never with
//! OK after a silently dropped request.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use prost::bytes::BufMut;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_prost::ProstDecoder;
use trail_log::{LogName, Store};
use trail_proto::v1::{AppendRequest, AppendResponse, Event};
use trail_server::{Limits, Metrics};

mod common;

use common::{sync_options, test_config, Result, Served};

const LOG: &str = "wire";

/// How long any one answer may take before the test fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends each message as the bytes it is given; decodes answers as
/// `AppendResponse`.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = AppendResponse;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<AppendResponse>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

fn event(id: &str) -> Event {
    common::login_event(id)
}

/// A well-formed request of one event, encoded.
fn good(id: &str) -> Vec<u8> {
    AppendRequest {
        log: LOG.to_owned(),
        events: vec![event(id)],
        atomic: false,
    }
    .encode_to_vec()
}

/// Not an `AppendRequest`: field 1 (`log`, a string) claims 5 bytes and
/// the message ends after 1.
fn undecodable() -> Vec<u8> {
    vec![0x0a, 0x05, b'a']
}

struct Server {
    served: Served,
    channel: Channel,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(limits: Limits) -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let config = test_config(limits);
        let store = Arc::new(Store::open(dir.path(), sync_options(&config))?);
        let served = Served::start(config, Arc::clone(&store), Metrics::disabled()).await?;
        let channel = Endpoint::from_shared(served.address.clone())?
            .connect()
            .await?;
        Ok(Server {
            served,
            channel,
            store,
            _dir: dir,
        })
    }

    /// The log's head LSN (0 when it does not exist).
    fn head(&self) -> Result<u64> {
        Ok(self
            .store
            .get(&LogName::new(LOG)?)?
            .map_or(0, |log| log.head().lsn.0))
    }

    async fn stop(self) -> Result {
        self.served.stop().await?;
        self.store.close()?;
        Ok(())
    }

    async fn unary(&self, message: Vec<u8>) -> Result<AppendResponse, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        grpc.unary(
            tonic::Request::new(message),
            PathAndQuery::from_static("/trail.v1.Log/Append"),
            RawCodec,
        )
        .await
        .map(tonic::Response::into_inner)
    }

    /// Sends `messages` as one `AppendStream`; returns every answer until
    /// the stream ends (bounded by the number sent, plus one for an error).
    async fn stream(
        &self,
        messages: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<AppendResponse, tonic::Status>>> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await?;
        let sent = messages.len();
        let mut answers = grpc
            .streaming(
                tonic::Request::new(tokio_stream::iter(messages)),
                PathAndQuery::from_static("/trail.v1.Log/AppendStream"),
                RawCodec,
            )
            .await?
            .into_inner();
        let mut seen = Vec::new();
        while seen.len() <= sent {
            match tokio::time::timeout(ANSWER_TIMEOUT, answers.next()).await? {
                None => break,
                Some(answer) => seen.push(answer),
            }
        }
        Ok(seen)
    }
}

fn assert_error(answer: &Result<AppendResponse, tonic::Status>, code: Code, needles: &[&str]) {
    match answer {
        Ok(response) => panic!("expected {code:?}, got {response:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "message: {}", status.message());
            for needle in needles {
                assert!(
                    status.message().contains(needle),
                    "{:?} does not contain {needle:?}",
                    status.message()
                );
            }
        }
    }
}

#[tokio::test]
async fn undecodable_request_in_a_stream_ends_it_with_its_position() -> Result {
    let server = Server::start(Limits::default()).await?;
    let answers = server
        .stream(vec![good("w-1"), undecodable(), good("w-3")])
        .await?;
    assert_eq!(answers.len(), 2, "{answers:?}");
    let first = answers[0].as_ref().map_err(Clone::clone)?;
    assert_eq!(first.receipts.len(), 1);
    assert_eq!(first.receipts[0].lsn, 1);
    assert_error(
        &answers[1],
        Code::InvalidArgument,
        &["request 2 of the stream", "AppendRequest"],
    );
    // The request after the bad one was never appended.
    assert_eq!(server.head()?, 1);
    server.stop().await
}

#[tokio::test]
async fn undecodable_unary_request_is_invalid_argument() -> Result {
    let server = Server::start(Limits::default()).await?;
    assert_error(
        &server.unary(undecodable()).await,
        Code::InvalidArgument,
        &["AppendRequest"],
    );
    assert_eq!(server.unary(good("u-1")).await?.receipts.len(), 1);
    server.stop().await
}

/// Limits small enough that an oversized request is cheap to send.
fn small_requests() -> Limits {
    Limits {
        request_bytes_max: 64 << 10,
        event_bytes_max: 32 << 10,
        payload_bytes_max: 16 << 10,
        change_bytes_max: 16 << 10,
        ..Limits::default()
    }
}

/// A message of `bytes` bytes; its content never matters, since it is
/// refused by its length prefix before it is read.
fn oversized(bytes: usize) -> Vec<u8> {
    vec![0x0a; bytes]
}

#[tokio::test]
async fn a_request_over_the_decode_limit_is_resource_exhausted_naming_the_key() -> Result {
    let server = Server::start(small_requests()).await?;
    let expected = "request is 100000 bytes; the limit is 65536 (limits.request_bytes_max)";
    let unary = server.unary(oversized(100_000)).await;
    assert_error(&unary, Code::ResourceExhausted, &[expected]);
    if let Err(status) = &unary {
        assert_eq!(status.message(), expected);
    }
    // Exactly at the limit passes the size check: it is then read, and
    // refused for what it says, not for its size.
    let at_limit = server.unary(oversized(64 << 10)).await;
    assert_error(&at_limit, Code::InvalidArgument, &[]);
    assert_eq!(server.unary(good("u-1")).await?.receipts.len(), 1);

    let answers = server
        .stream(vec![good("s-1"), oversized(100_000), good("s-3")])
        .await?;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers[0].is_ok(), "{answers:?}");
    assert_error(
        &answers[1],
        Code::ResourceExhausted,
        &[&format!("request 2 of the stream: {expected}")],
    );
    assert_eq!(server.head()?, 2);
    server.stop().await
}
