//! A model's routing policy, kept in the registry (`<model>/routing.toml`) so that it survives
//! restarts and every replica sharing the registry follows it. Today: which version serves
//! requests that name none. (Canary weights and shadows will live here too.)

use serde::{Deserialize, Serialize};

pub const ROUTING_FILE: &str = "routing.toml";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// The version pinned by `switchyard promote`; `None`: the highest ready version serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_version: Option<u64>,
}

impl Routing {
    /// Parses routing.toml; the error says what is wrong (the caller adds which file).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# Written by `switchyard promote`; read by every replica sharing this registry.\n{body}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_keys() {
        let r = Routing {
            pinned_version: Some(3),
        };
        assert_eq!(Routing::parse(&r.to_toml()).unwrap(), r);
        assert_eq!(Routing::parse("").unwrap(), Routing::default());
        assert!(Routing::parse("pinned = 3").unwrap_err().contains("pinned"));
    }
}
