//! A server under test: `NAME=URL`, where the URL's scheme picks the protocol.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    RestJson,
    RestBinary,
    Grpc,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RestJson => "rest-json",
            Self::RestBinary => "rest-binary",
            Self::Grpc => "grpc",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// `None` for plain `http://`: the `--encoding` flag decides.
    pub protocol: Option<Protocol>,
    /// `host:port`.
    pub authority: String,
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, url) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}': expected NAME=URL, e.g. sy=http://127.0.0.1:8000"))?;
        if name.is_empty() {
            return Err(format!("'{s}': the target needs a name before '='"));
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("'{url}': expected a URL like http://HOST:PORT or grpc://HOST:PORT")
        })?;
        let protocol = match scheme {
            "http" => None,
            "json+http" => Some(Protocol::RestJson),
            "binary+http" => Some(Protocol::RestBinary),
            "grpc" => Some(Protocol::Grpc),
            other => {
                return Err(format!(
                    "'{url}': unknown scheme '{other}' (http, json+http, binary+http or grpc)"
                ));
            }
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || !authority.contains(':') {
            return Err(format!("'{url}': give HOST:PORT only, without a path"));
        }
        Ok(Self {
            name: name.to_string(),
            protocol,
            authority: authority.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_protocols() {
        let t = Target::parse("sy=http://127.0.0.1:8000/").unwrap();
        assert_eq!(
            (t.name.as_str(), t.protocol, t.authority.as_str()),
            ("sy", None, "127.0.0.1:8000")
        );
        assert_eq!(
            Target::parse("b=binary+http://h:1").unwrap().protocol,
            Some(Protocol::RestBinary)
        );
        assert_eq!(
            Target::parse("g=grpc://h:1").unwrap().protocol,
            Some(Protocol::Grpc)
        );
        for bad in [
            "http://h:1",
            "=http://h:1",
            "x=ftp://h:1",
            "x=http://h",
            "x=http://h:1/v2",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
