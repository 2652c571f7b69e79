//! A model's routing policy, kept in the registry (`<model>/routing.toml`) so that it survives
//! restarts and every replica sharing the registry follows it: which version serves requests
//! that name none, and the model's rollout (its step, weights and history).

use serde::{Deserialize, Serialize};

use crate::routing::Rollout;

pub const ROUTING_FILE: &str = "routing.toml";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// The version pinned by `switchyard promote`; `None`: the highest ready version serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_version: Option<u64>,
    /// The current (or last) rollout; while it is running or paused it decides the split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

impl Routing {
    /// Parses routing.toml; the error says what is wrong (the caller adds which file).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// The file's text; an error (never expected) is refused rather than written as an empty
    /// policy, which would drop the pin and the rollout.
    pub fn to_toml(&self) -> Result<String, String> {
        let body =
            toml::to_string(self).map_err(|e| format!("cannot write the routing policy: {e}"))?;
        Ok(format!(
            "# Written by `switchyard promote` and `switchyard rollout`; read by every replica sharing \
             this registry.\n{body}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_keys() {
        let mut r = Routing {
            pinned_version: Some(3),
            rollout: None,
        };
        assert_eq!(Routing::parse(&r.to_toml().unwrap()).unwrap(), r);
        assert_eq!(Routing::parse("").unwrap(), Routing::default());
        assert!(Routing::parse("pinned = 3").unwrap_err().contains("pinned"));
        let spec = crate::routing::RolloutSpec::new(4);
        r.rollout = Some(Rollout::start(spec, 3, 1_000, "test"));
        assert_eq!(Routing::parse(&r.to_toml().unwrap()).unwrap(), r);
    }
}
