//! `limits.request_bytes_max`, enforced on the gRPC frames of a request
//! body before tonic reads them, so a request over it is refused with the
//! same status shape as every other limit: RESOURCE_EXHAUSTED, `request is
//! N bytes; the limit is M (limits.request_bytes_max)`.
//!
//! tonic's own decoding limit answers OUT_OF_RANGE with its own text and
//! cannot be told otherwise; a codec cannot check sizes either (it is built
//! by `Default`, without the configured limit, and sees the message only
//! after tonic buffered it). So this wraps the service: it reads each gRPC
//! message's 5-byte prefix (compression flag, big-endian u32 length) as
//! the body streams by, and when a length is over the limit it passes on
//! the bytes before that message and then ends the body with the status.
//! tonic turns a body error that is a `Status` into exactly that status:
//! the answer of a unary call, or the `Err` item of a request stream, where
//! `AppendStream` adds the request's position. tonic's own limit stays set
//! to the same value behind this, as a second guard.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::Frame;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{Bytes, Service};
use tonic::server::NamedService;
use tonic::Status;

/// The gRPC length prefix: a compression flag byte and a u32 length.
const PREFIX_BYTES: usize = 5;

/// A gRPC service whose request messages may be at most `limit` bytes.
#[derive(Clone, Debug)]
pub struct RequestLimit<S> {
    inner: S,
    limit: usize,
}

impl<S> RequestLimit<S> {
    /// Wraps `inner`; `limit` is `limits.request_bytes_max`.
    pub fn new(inner: S, limit: usize) -> RequestLimit<S> {
        RequestLimit { inner, limit }
    }
}

impl<S: NamedService> NamedService for RequestLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for RequestLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limit = self.limit;
        self.inner
            .call(request.map(|body| Body::new(LimitedBody::new(body, limit))))
    }
}

/// A request body that ends with RESOURCE_EXHAUSTED at the first gRPC
/// message longer than `limit`.
struct LimitedBody {
    inner: Body,
    limit: usize,
    /// The prefix of the message being read, as far as it has arrived.
    prefix: [u8; PREFIX_BYTES],
    prefix_len: usize,
    /// Bytes of the current message's payload still to pass.
    payload_left: usize,
    /// The refusal, once found; sent after the bytes before it.
    refusal: Option<Status>,
    /// The refusal was sent: nothing more comes.
    done: bool,
}

impl LimitedBody {
    fn new(inner: Body, limit: usize) -> LimitedBody {
        LimitedBody {
            inner,
            limit,
            prefix: [0; PREFIX_BYTES],
            prefix_len: 0,
            payload_left: 0,
            refusal: None,
            done: false,
        }
    }

    /// Follows the message boundaries through `data`. Returns where the
    /// first message over the limit starts in `data` (0 when its prefix
    /// began in an earlier chunk) and sets the refusal; `None` when all of
    /// `data` may pass.
    fn scan(&mut self, data: &[u8]) -> Option<usize> {
        let mut at = 0;
        while at < data.len() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(data.len() - at);
                self.payload_left -= skip;
                at += skip;
                continue;
            }
            let message_start = if self.prefix_len == 0 { at } else { 0 };
            let take = (PREFIX_BYTES - self.prefix_len).min(data.len() - at);
            self.prefix[self.prefix_len..self.prefix_len + take]
                .copy_from_slice(&data[at..at + take]);
            self.prefix_len += take;
            at += take;
            if self.prefix_len < PREFIX_BYTES {
                break;
            }
            self.prefix_len = 0;
            let length = u32::from_be_bytes([
                self.prefix[1],
                self.prefix[2],
                self.prefix[3],
                self.prefix[4],
            ]);
            let length = usize::try_from(length).unwrap_or(usize::MAX);
            if length > self.limit {
                self.refusal = Some(Status::resource_exhausted(format!(
                    "request is {length} bytes; the limit is {} (limits.request_bytes_max)",
                    self.limit
                )));
                return Some(message_start);
            }
            self.payload_left = length;
        }
        None
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(refusal) = self.refusal.take() {
            self.done = true;
            return Poll::Ready(Some(Err(refusal)));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            // Trailers pass as they are.
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        match self.scan(&data) {
            None => Poll::Ready(Some(Ok(Frame::data(data)))),
            Some(0) => {
                self.done = true;
                let refusal = self
                    .refusal
                    .take()
                    .unwrap_or_else(|| Status::internal("request limit: no refusal to send"));
                Poll::Ready(Some(Err(refusal)))
            }
            // The messages before the refused one go first, so a stream
            // answers them before the error.
            Some(start) => Poll::Ready(Some(Ok(Frame::data(data.slice(..start))))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.refusal.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // The body may end early; only the upper bound still holds.
        let mut hint = http_body::SizeHint::new();
        if let Some(upper) = self.inner.size_hint().upper() {
            hint.set_upper(upper);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(length: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, length as usize));
        bytes
    }

    fn body(limit: usize) -> LimitedBody {
        LimitedBody::new(Body::empty(), limit)
    }

    #[test]
    fn messages_within_the_limit_pass_in_any_chunking() {
        let mut stream = message(10);
        stream.extend(message(0));
        stream.extend(message(100));
        for chunk in [1, 2, 3, 5, 7, 64, 1000] {
            let mut limited = body(100);
            for piece in stream.chunks(chunk) {
                assert_eq!(limited.scan(piece), None, "chunk {chunk}");
            }
            assert_eq!((limited.prefix_len, limited.payload_left), (0, 0));
        }
    }

    #[test]
    fn the_first_message_over_the_limit_is_refused_where_it_starts() {
        let mut stream = message(10);
        let start = stream.len();
        stream.extend(message(101));
        let mut limited = body(100);
        assert_eq!(limited.scan(&stream), Some(start));
        let refusal = limited
            .refusal
            .take()
            .map(|status| (status.code(), status.message().to_owned()));
        assert_eq!(
            refusal,
            Some((
                tonic::Code::ResourceExhausted,
                "request is 101 bytes; the limit is 100 (limits.request_bytes_max)".to_owned()
            ))
        );
        // Split inside the prefix: the refusal comes with the chunk that
        // completes it, at 0.
        let mut limited = body(100);
        assert_eq!(limited.scan(&stream[..start + 2]), None);
        assert_eq!(limited.scan(&stream[start + 2..]), Some(0));
    }
}
