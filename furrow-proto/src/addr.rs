use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A transport address an actor listens on.
///
/// Written as `uds:///abs/path.sock` or `tcp://host:port` on the wire and in
/// configuration.
///
/// ```
/// use furrow_proto::Addr;
/// let a: Addr = "tcp://127.0.0.1:4000".parse().unwrap();
/// assert_eq!(a.to_string(), "tcp://127.0.0.1:4000");
/// let u: Addr = "uds:///tmp/x.sock".parse().unwrap();
/// assert!(matches!(u, Addr::Uds(_)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    /// A Unix domain socket path.
    Uds(PathBuf),
    /// A TCP `host:port` (host may be a name or an IP literal).
    Tcp(String),
}

/// An address string that is neither `uds://PATH` nor `tcp://HOST:PORT`.
///
/// It holds the string that was refused.
///
/// ```
/// use furrow_proto::Addr;
/// let err = "http://example.com:80".parse::<Addr>().unwrap_err();
/// assert_eq!(err.0, "http://example.com:80");
/// assert!("tcp://no-port".parse::<Addr>().is_err());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("invalid address {0:?}: expected uds:///path or tcp://host:port")]
pub struct AddrParseError(pub String);

impl FromStr for Addr {
    type Err = AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("uds://") {
            if p.is_empty() {
                return Err(AddrParseError(s.to_owned()));
            }
            Ok(Addr::Uds(PathBuf::from(p)))
        } else if let Some(hp) = s.strip_prefix("tcp://") {
            match hp.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(Addr::Tcp(hp.to_owned())),
                _ => Err(AddrParseError(s.to_owned())),
            }
        } else {
            Err(AddrParseError(s.to_owned()))
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Uds(p) => write!(f, "uds://{}", p.display()),
            Addr::Tcp(hp) => write!(f, "tcp://{hp}"),
        }
    }
}

impl serde::Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
