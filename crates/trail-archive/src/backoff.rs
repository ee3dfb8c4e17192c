//! Exponential backoff between failed archive attempts: doubling from
//! `initial` up to `max`, reset by a success. Bounded by construction.

use std::time::Duration;

/// Delay before the next attempt after failures.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Option<Duration>,
}

impl Backoff {
    /// Starts at `initial`, never waits longer than `max`.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial: initial.min(max),
            max,
            current: None,
        }
    }

    /// A failure: the delay before the next attempt.
    pub fn failed(&mut self) -> Duration {
        let next = match self.current {
            None => self.initial,
            Some(current) => current.saturating_mul(2).min(self.max),
        };
        self.current = Some(next);
        next
    }

    /// A success: the next failure starts from `initial` again.
    pub fn succeeded(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<u128> = (0..5).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), Duration::from_millis(100));
    }
}
