//! API versions: what this client speaks, what a broker speaks, and the pick between them.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::Request;

use crate::error::{Error, Result};

/// The newest version of each API this client is written for. The oldest is the oldest
/// kafka-protocol encodes. Produce and Fetch stop before v13, where topics are named by id.
fn our_max(key: i16) -> i16 {
    match ApiKey::try_from(key) {
        Ok(ApiKey::ApiVersions) => 3,
        Ok(ApiKey::Metadata) => 12,
        Ok(ApiKey::Produce) => 12,
        Ok(ApiKey::Fetch) => 12,
        Ok(ApiKey::ListOffsets) => 7,
        Ok(ApiKey::CreateTopics) => 7,
        Ok(ApiKey::InitProducerId) => 4,
        // Group APIs: the versions before batched coordinators and topic ids.
        Ok(ApiKey::FindCoordinator) => 3,
        Ok(ApiKey::JoinGroup) => 7,
        Ok(ApiKey::SyncGroup) => 5,
        Ok(ApiKey::Heartbeat) => 4,
        Ok(ApiKey::LeaveGroup) => 4,
        Ok(ApiKey::OffsetCommit) => 8,
        Ok(ApiKey::OffsetFetch) => 7,
        // v1 frames the SASL exchange in SaslAuthenticate requests (v0 sent raw tokens).
        Ok(ApiKey::SaslHandshake) => 1,
        // v1 adds the session lifetime (KIP-368).
        Ok(ApiKey::SaslAuthenticate) => 2,
        _ => 0,
    }
}

pub fn our_versions<R: Request>() -> RangeInclusive<i16> {
    R::VERSIONS.min..=our_max(R::KEY).min(R::VERSIONS.max)
}

/// The version ranges one broker advertised in ApiVersions.
#[derive(Debug, Default, Clone)]
pub struct Versions {
    ranges: HashMap<i16, (i16, i16)>,
}

impl Versions {
    pub fn from_response(resp: &ApiVersionsResponse) -> Self {
        let ranges = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Versions { ranges }
    }

    /// The highest version in both ranges. Before negotiation (an empty table) our own
    /// newest is used: that is how ApiVersions itself is sent.
    pub fn pick(&self, key: i16, ours: RangeInclusive<i16>, broker: &str) -> Result<i16> {
        if self.ranges.is_empty() {
            return Ok(*ours.end());
        }
        let name = ApiKey::try_from(key).map_or_else(|_| key.to_string(), |k| format!("{k:?}"));
        let &(min, max) = self
            .ranges
            .get(&key)
            .ok_or_else(|| Error::Other(format!("broker {broker} does not support the {name} API")))?;
        let version = max.min(*ours.end());
        if version < min.max(*ours.start()) {
            return Err(Error::Other(format!(
                "broker {broker} speaks {name} versions {min}..={max}; this client speaks {}..={}",
                ours.start(),
                ours.end()
            )));
        }
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_highest_common_version() {
        let mut v = Versions::default();
        v.ranges.insert(0, (3, 11));
        assert_eq!(v.pick(0, 3..=12, "b").unwrap(), 11);
        v.ranges.insert(0, (3, 20));
        assert_eq!(v.pick(0, 3..=12, "b").unwrap(), 12);
        v.ranges.insert(0, (13, 20));
        let err = v.pick(0, 3..=12, "b").unwrap_err().to_string();
        assert!(err.contains("Produce versions 13..=20"), "{err}");
        assert!(v.pick(1, 4..=12, "b").unwrap_err().to_string().contains("Fetch"));
    }

    #[test]
    fn our_ranges_are_within_what_the_library_encodes() {
        assert_eq!(our_versions::<ProduceRequest>(), 3..=12);
        assert_eq!(our_versions::<FetchRequest>(), 4..=12);
        assert_eq!(our_versions::<ApiVersionsRequest>(), 0..=3);
    }
}
