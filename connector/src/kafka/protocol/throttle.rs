//! Broker throttling (KIP-219): from the versions that KIP bumped, a broker over a
//! client's quota answers at once, with `throttle_time_ms` saying how long the client
//! must not send it anything more. Before those versions the broker itself delayed the
//! answer, so the client does not wait again.

use std::time::{Duration, Instant};

use kafka_protocol::messages::*;

/// The longest throttle honoured. A real broker's is about its quota window (some
/// seconds); one of `i32::MAX` ms (24 days) from a hostile or broken broker would
/// otherwise hold a connection's requests, a partition's fetches with them, for weeks.
pub const MAX_THROTTLE: Duration = Duration::from_secs(30);

/// A response that may ask the client to hold off.
pub trait ThrottleTime {
    /// The first version whose throttle the client enforces itself (KIP-219).
    const CLIENT_THROTTLES_FROM: i16;

    fn throttle_time_ms(&self) -> i32;

    /// Until when the broker that sent this (at `version`) asks not to be sent to, at
    /// most `MAX_THROTTLE` from `now`; `None` when it does not.
    fn throttled_until(&self, version: i16, now: Instant) -> Option<Instant> {
        if version < Self::CLIENT_THROTTLES_FROM {
            return None;
        }
        let ms = u64::try_from(self.throttle_time_ms()).ok().filter(|&ms| ms > 0)?;
        now.checked_add(Duration::from_millis(ms).min(MAX_THROTTLE))
    }
}

macro_rules! throttle_time {
    ($($response:ty: $from:expr),* $(,)?) => {$(
        impl ThrottleTime for $response {
            const CLIENT_THROTTLES_FROM: i16 = $from;

            fn throttle_time_ms(&self) -> i32 {
                self.throttle_time_ms
            }
        }
    )*};
}

// The versions KIP-219 introduced (Kafka 2.0), per API.
throttle_time!(
    ApiVersionsResponse: 2,
    CreateTopicsResponse: 3,
    FetchResponse: 8,
    FindCoordinatorResponse: 2,
    HeartbeatResponse: 2,
    InitProducerIdResponse: 1,
    JoinGroupResponse: 3,
    LeaveGroupResponse: 2,
    ListOffsetsResponse: 3,
    MetadataResponse: 6,
    OffsetCommitResponse: 4,
    OffsetFetchResponse: 4,
    ProduceResponse: 6,
    SyncGroupResponse: 2,
);

/// The SASL responses carry no throttle time: a broker authenticates before quotas apply.
macro_rules! never_throttled {
    ($($response:ty),* $(,)?) => {$(
        impl ThrottleTime for $response {
            const CLIENT_THROTTLES_FROM: i16 = i16::MAX;

            fn throttle_time_ms(&self) -> i32 {
                0
            }
        }
    )*};
}

never_throttled!(SaslHandshakeResponse, SaslAuthenticateResponse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_positive_throttle_time_throttles() {
        let now = Instant::now();
        let mut resp = ProduceResponse::default();
        assert_eq!(resp.throttled_until(9, now), None);
        resp.throttle_time_ms = -5;
        assert_eq!(resp.throttled_until(9, now), None);
        resp.throttle_time_ms = 250;
        assert_eq!(
            resp.throttled_until(9, now),
            Some(now + Duration::from_millis(250))
        );
    }

    #[test]
    fn old_versions_are_not_throttled_twice_and_a_huge_throttle_is_capped() {
        let now = Instant::now();
        let resp = FetchResponse::default().with_throttle_time_ms(250);
        assert_eq!(
            resp.throttled_until(7, now),
            None,
            "the broker delayed it already"
        );
        assert!(resp.throttled_until(8, now).is_some());
        let resp = FetchResponse::default().with_throttle_time_ms(i32::MAX);
        assert_eq!(resp.throttled_until(12, now), Some(now + MAX_THROTTLE));
    }
}
