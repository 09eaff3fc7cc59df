//! Request bodies that cannot stall a connection forever: [`IdleBody`] fails with
//! [`BodyTimeout`] when the client sends nothing for a while in the middle of a body (a
//! per-read timeout, like nginx's `client_body_timeout`: a large upload that keeps moving is
//! never cut). Handlers that read the body, and the gateway that streams it upstream, turn that
//! failure into 408 (`ApiError::RequestTimeout`) instead of waiting.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::{Sleep, sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client sent no body data within the body read timeout.
#[derive(Debug)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the client sent no request body data for {:?}", self.0)
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether `e`, or an error it was caused by, is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A body whose every read must make progress within `timeout`. The clock runs only while the
/// reader waits for data (time the reader itself takes does not count) and restarts with each
/// frame. Size and end-of-stream are the inner body's, so framing is unchanged.
pub struct IdleBody<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self { inner, timeout, sleep: None }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.sleep = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        this.sleep = None;
        Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    /// One frame, then nothing, ever (a client that sent `{` and went silent).
    struct Stalls(bool);

    impl Body for Stalls {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                Poll::Pending
            } else {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{")))))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_and_a_moving_one_does_not() {
        // Framing is the inner body's.
        let full = IdleBody::new(Full::new(Bytes::from_static(b"abc")), Duration::from_secs(1));
        assert_eq!(full.size_hint().exact(), Some(3));
        assert_eq!(full.collect().await.unwrap().to_bytes(), "abc");

        let mut body = IdleBody::new(Stalls(false), Duration::from_secs(30));
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "{");
        let started = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(is_body_timeout(err.as_ref()), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
