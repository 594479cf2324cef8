//! Broker throttling (KIP-219): a broker over a client's quota answers at once, with
//! `throttle_time_ms` saying how long the client must not send it anything more. Every
//! response the client reads carries the field (0 before the version that added it).

use std::time::{Duration, Instant};

use kafka_protocol::messages::*;

/// A response that may ask the client to hold off.
pub trait ThrottleTime {
    fn throttle_time_ms(&self) -> i32;

    /// Until when the broker that sent this asks not to be sent to; `None` when it does not.
    fn throttled_until(&self, now: Instant) -> Option<Instant> {
        let ms = u64::try_from(self.throttle_time_ms()).ok().filter(|&ms| ms > 0)?;
        now.checked_add(Duration::from_millis(ms))
    }
}

macro_rules! throttle_time {
    ($($response:ty),* $(,)?) => {$(
        impl ThrottleTime for $response {
            fn throttle_time_ms(&self) -> i32 {
                self.throttle_time_ms
            }
        }
    )*};
}

throttle_time!(
    ApiVersionsResponse,
    CreateTopicsResponse,
    FetchResponse,
    FindCoordinatorResponse,
    HeartbeatResponse,
    InitProducerIdResponse,
    JoinGroupResponse,
    LeaveGroupResponse,
    ListOffsetsResponse,
    MetadataResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    ProduceResponse,
    SyncGroupResponse,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_positive_throttle_time_throttles() {
        let now = Instant::now();
        let mut resp = ProduceResponse::default();
        assert_eq!(resp.throttled_until(now), None);
        resp.throttle_time_ms = -5;
        assert_eq!(resp.throttled_until(now), None);
        resp.throttle_time_ms = 250;
        assert_eq!(resp.throttled_until(now), Some(now + Duration::from_millis(250)));
    }
}
