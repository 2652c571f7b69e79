//! `config.toml` parsing and resolution against the defaults.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::registry::config::{Defaults, ModelConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = ModelConfig::parse(text, "config.toml")
    {
        let _ = config.resolve(&Defaults::default(), "config.toml");
    }
});
