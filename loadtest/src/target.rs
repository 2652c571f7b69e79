//! A server under test: `NAME=URL`, where the URL's scheme picks the protocol and TLS.

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

/// The schemes we accept, for error messages.
const SCHEMES: &str =
    "http, https, json+http, json+https, binary+http, binary+https, grpc or grpcs";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// `None` for plain `http://` and `https://`: the `--encoding` flag decides.
    pub protocol: Option<Protocol>,
    /// Over TLS (`https`, `grpcs` and their variants).
    pub tls: bool,
    /// `host:port`.
    pub authority: String,
    /// The host alone (no brackets around an IPv6 address): the TLS server name.
    pub host: String,
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
        let (protocol, tls) = match scheme {
            "http" => (None, false),
            "https" => (None, true),
            "json+http" => (Some(Protocol::RestJson), false),
            "json+https" => (Some(Protocol::RestJson), true),
            "binary+http" => (Some(Protocol::RestBinary), false),
            "binary+https" => (Some(Protocol::RestBinary), true),
            "grpc" => (Some(Protocol::Grpc), false),
            "grpcs" => (Some(Protocol::Grpc), true),
            other => {
                return Err(format!("'{url}': unknown scheme '{other}' ({SCHEMES})"));
            }
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(format!("'{url}': give HOST:PORT only, without a path"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => v6
                .split_once("]:")
                .ok_or_else(|| format!("'{url}': expected [IPv6]:PORT"))?,
            None => authority
                .rsplit_once(':')
                .ok_or_else(|| format!("'{url}': give HOST:PORT (the port is required)"))?,
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!(
                "'{url}': give HOST:PORT with a port number, e.g. 127.0.0.1:8000"
            ));
        }
        Ok(Self {
            name: name.to_string(),
            protocol,
            tls,
            authority: authority.to_string(),
            host: host.to_string(),
        })
    }

    /// The scheme to show in reports: `http`, `https`, `grpc` or `grpcs`.
    pub fn scheme(&self, grpc: bool) -> &'static str {
        match (grpc, self.tls) {
            (true, true) => "grpcs",
            (true, false) => "grpc",
            (false, true) => "https",
            (false, false) => "http",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_protocols() {
        let t = Target::parse("sy=http://127.0.0.1:8000/").unwrap();
        assert_eq!(
            (t.name.as_str(), t.protocol, t.tls, t.authority.as_str()),
            ("sy", None, false, "127.0.0.1:8000")
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
            "x=https://h",
            "x=https://h:port",
            "x=grpcs://:1",
            "x=https://[::1]",
            "x=tls+http://h:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_schemes_mirror_the_plain_ones() {
        for (url, protocol, tls) in [
            ("https://h:1", None, true),
            ("json+https://h:1", Some(Protocol::RestJson), true),
            ("binary+https://h:1", Some(Protocol::RestBinary), true),
            ("grpcs://h:1", Some(Protocol::Grpc), true),
            ("json+http://h:1", Some(Protocol::RestJson), false),
            ("grpc://h:1", Some(Protocol::Grpc), false),
        ] {
            let t = Target::parse(&format!("x={url}")).unwrap();
            assert_eq!((t.protocol, t.tls), (protocol, tls), "{url}");
            assert_eq!((t.host.as_str(), t.authority.as_str()), ("h", "h:1"));
        }
        let t = Target::parse("x=https://localhost:8443").unwrap();
        assert_eq!(t.scheme(false), "https");
        let t = Target::parse("x=grpcs://[::1]:8001").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority.as_str()),
            ("::1", "[::1]:8001")
        );
        assert_eq!(t.scheme(true), "grpcs");
    }

    #[test]
    fn unknown_scheme_lists_the_tls_ones() {
        let e = Target::parse("x=h2://h:1").unwrap_err();
        assert!(e.contains("https") && e.contains("grpcs"), "{e}");
    }
}
