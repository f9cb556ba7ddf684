//! Which store a [`StoreLocation`] really names, so that a sync never treats its own source as a
//! separate destination because the same server was spelled differently (`127.0.0.1` and
//! `localhost`, `HOST` and `host.`, `:80` and no port, `[::1]` and `[0:0::1]`).
//!
//! Two locations *may be the same store* unless proven otherwise: same port and endpoint path,
//! and either the same canonical host name or resolved addresses in common (every loopback or
//! unspecified address counts as "this machine"). The scheme is ignored: one port serves one
//! protocol, so `http://h:9000` and `https://h:9000` are the same server. AWS is one store for
//! every regional endpoint (bucket names are global). A host that does not resolve is compared
//! by name only (the sync to it fails anyway).

use super::store::StoreLocation;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The server part of a store: how its endpoint compares with other endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// AWS S3 (no endpoint, or any `*.amazonaws.com` / `*.amazonaws.com.cn` endpoint).
    Aws,
    Custom {
        /// Lower case, without a trailing dot or IPv6 brackets; an IP literal in canonical form;
        /// any loopback or unspecified address, and `localhost`, as [`LOCAL`].
        host: String,
        port: u16,
        /// Endpoint path (a gateway may serve several stores under paths), without trailing `/`.
        path: String,
        /// Addresses the host resolved to (canonical, see [`canonical_ip`]); empty: unresolved.
        addresses: BTreeSet<String>,
    },
}

/// Canonical name of "this machine": loopback and unspecified addresses and `localhost`.
pub const LOCAL: &str = "local-host";

/// A location's canonical identity: server, bucket and normalised prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreIdentity {
    pub server: Server,
    pub bucket: String,
    pub prefix: String,
}

impl StoreIdentity {
    /// The identity without DNS: IP literals and `localhost` are canonicalised, other names are
    /// compared as spelled (case and trailing dot aside).
    pub fn of(location: &StoreLocation) -> Result<Self, String> {
        Ok(StoreIdentity {
            server: parse_server(location.endpoint.as_deref())?,
            bucket: location.bucket.clone(),
            prefix: location.prefix.clone(),
        })
    }

    /// [`StoreIdentity::of`] plus the host's resolved addresses.
    pub async fn resolve(location: &StoreLocation) -> Result<Self, String> {
        let mut id = Self::of(location)?;
        if let Server::Custom {
            host,
            port,
            addresses,
            ..
        } = &mut id.server
            && host != LOCAL
            && host.parse::<IpAddr>().is_err()
            && let Ok(found) = tokio::net::lookup_host((host.as_str(), *port)).await
        {
            addresses.extend(found.map(|a| canonical_ip(a.ip())));
        }
        Ok(id)
    }

    /// Whether the two identities may share objects: possibly the same server, the same bucket,
    /// and one prefix inside the other (or equal).
    pub fn overlaps(&self, other: &StoreIdentity) -> bool {
        let inside = |a: &str, b: &str| a.is_empty() || b == a || b.starts_with(&format!("{a}/"));
        may_be_same_server(&self.server, &other.server)
            && self.bucket == other.bucket
            && (inside(&self.prefix, &other.prefix) || inside(&other.prefix, &self.prefix))
    }
}

impl std::fmt::Display for StoreIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.server {
            Server::Aws => write!(f, "aws")?,
            Server::Custom {
                host, port, path, ..
            } => write!(f, "{host}:{port}{path}")?,
        }
        write!(f, "|{}|{}", self.bucket, self.prefix)
    }
}

fn may_be_same_server(a: &Server, b: &Server) -> bool {
    match (a, b) {
        (Server::Aws, Server::Aws) => true,
        (
            Server::Custom {
                host: h1,
                port: p1,
                path: q1,
                addresses: a1,
            },
            Server::Custom {
                host: h2,
                port: p2,
                path: q2,
                addresses: a2,
            },
        ) => {
            let names = |h: &String, a: &BTreeSet<String>| {
                let mut all = a.clone();
                all.insert(h.clone());
                all
            };
            p1 == p2 && q1 == q2 && !names(h1, a1).is_disjoint(&names(h2, a2))
        }
        _ => false,
    }
}

/// Canonical text of an address: IPv4-mapped IPv6 as IPv4, loopback and unspecified as [`LOCAL`].
pub fn canonical_ip(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() || ip.is_unspecified() {
        LOCAL.to_string()
    } else {
        ip.to_string()
    }
}

/// Parses an endpoint URL (`http[s]://[user@]host[:port][/path]`) into a [`Server`].
pub fn parse_server(endpoint: Option<&str>) -> Result<Server, String> {
    let Some(endpoint) = endpoint else {
        return Ok(Server::Aws);
    };
    let bad = |why: &str| format!("endpoint {endpoint:?} {why}");
    let (default_port, rest) = if let Some(r) = strip_prefix_ignore_case(endpoint, "https://") {
        (443, r)
    } else if let Some(r) = strip_prefix_ignore_case(endpoint, "http://") {
        (80, r)
    } else {
        return Err(bad("must be an http:// or https:// URL"));
    };
    if endpoint.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_end_matches('/').to_string();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed '['"))?;
        (h, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p.parse::<u16>().map_err(|_| bad("has an invalid port"))?,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn") {
        return Ok(Server::Aws);
    }
    let host = match host.parse::<IpAddr>() {
        Ok(ip) => canonical_ip(ip),
        Err(_) if host == "localhost" || host.ends_with(".localhost") => LOCAL.to_string(),
        Err(_) => host,
    };
    Ok(Server::Custom {
        host,
        port,
        path,
        addresses: BTreeSet::new(),
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loc(endpoint: Option<&str>, bucket: &str, prefix: &str) -> StoreLocation {
        let mut l = StoreLocation::parse_uri(&format!("s3://{bucket}/{prefix}")).unwrap();
        l.endpoint = endpoint.map(str::to_string);
        l
    }

    fn id(endpoint: Option<&str>, bucket: &str, prefix: &str) -> StoreIdentity {
        StoreIdentity::of(&loc(endpoint, bucket, prefix)).unwrap()
    }

    #[test]
    fn spellings_of_one_server_are_one_server() {
        let same = [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://LOCALHOST:9000/",
            "http://localhost.:9000",
            "HTTP://[::1]:9000",
            "http://[0:0:0:0:0:0:0:1]:9000",
            "http://[::ffff:127.0.0.1]:9000",
            "http://127.0.0.2:9000",
            "http://0.0.0.0:9000",
            "https://user@127.0.0.1:9000",
        ];
        for a in same {
            for b in same {
                assert!(
                    id(Some(a), "bkt", "m").overlaps(&id(Some(b), "bkt", "m")),
                    "{a} vs {b}"
                );
            }
        }
        assert_eq!(
            parse_server(Some("http://Minio.Example.")).unwrap(),
            parse_server(Some("http://minio.example:80")).unwrap()
        );
        assert_eq!(
            parse_server(Some("https://minio.example")).unwrap(),
            parse_server(Some("https://minio.example:443/")).unwrap()
        );
        assert_eq!(
            parse_server(Some("https://s3.eu-west-1.amazonaws.com")).unwrap(),
            Server::Aws
        );
        assert_eq!(parse_server(None).unwrap(), Server::Aws);
    }

    #[test]
    fn different_servers_buckets_and_disjoint_prefixes_do_not_overlap() {
        let base = id(Some("http://localhost:9000"), "bkt", "a/m");
        assert!(!base.overlaps(&id(Some("http://localhost:9001"), "bkt", "a/m")));
        assert!(!base.overlaps(&id(Some("http://localhost:9000/gw"), "bkt", "a/m")));
        assert!(!base.overlaps(&id(Some("http://minio.example:9000"), "bkt", "a/m")));
        assert!(!base.overlaps(&id(Some("http://localhost:9000"), "other", "a/m")));
        assert!(!base.overlaps(&id(Some("http://localhost:9000"), "bkt", "a/mm")));
        assert!(!base.overlaps(&id(None, "bkt", "a/m")));
        assert!(base.overlaps(&id(Some("http://localhost:9000"), "bkt", "a")));
        assert!(base.overlaps(&id(Some("http://localhost:9000"), "bkt", "a/m/x")));
        assert!(base.overlaps(&id(Some("http://localhost:9000"), "bkt", "")));
    }

    #[test]
    fn a_name_and_an_address_it_resolves_to_are_one_server() {
        let named = |host: &str, addresses: &[&str]| StoreIdentity {
            server: Server::Custom {
                host: host.into(),
                port: 9000,
                path: String::new(),
                addresses: addresses.iter().map(|a| a.to_string()).collect(),
            },
            bucket: "bkt".into(),
            prefix: "m".into(),
        };
        let by_ip = id(Some("http://10.0.0.5:9000"), "bkt", "m/x");
        assert!(named("minio.internal", &["10.0.0.5"]).overlaps(&by_ip));
        assert!(by_ip.overlaps(&named("minio.internal", &["10.0.0.7", "10.0.0.5"])));
        assert!(!named("minio.internal", &["10.0.0.6"]).overlaps(&by_ip));
        // Two names, one address: the same server.
        assert!(named("a.example", &["10.0.0.9"]).overlaps(&named("b.example", &["10.0.0.9"])));
        // A name resolving to loopback is this machine.
        assert!(named("dev-box", &[LOCAL]).overlaps(&id(Some("http://[::1]:9000"), "bkt", "m")));
    }

    #[test]
    fn malformed_endpoints_are_named() {
        for bad in [
            "ftp://x",
            "http://",
            "http://[::1",
            "http://h:99999",
            "http://h:x",
            "http://h\n:1",
        ] {
            let err = parse_server(Some(bad)).unwrap_err();
            assert!(err.contains("endpoint"), "{err}");
        }
    }

    #[tokio::test]
    async fn resolution_joins_a_name_to_its_addresses() {
        // IP literals and `localhost` are canonical before any lookup; resolving keeps them so.
        let a = StoreIdentity::resolve(&loc(Some("http://127.0.0.1:9000"), "bkt", "m"))
            .await
            .unwrap();
        let b = StoreIdentity::resolve(&loc(Some("http://localhost:9000"), "bkt", "m/x"))
            .await
            .unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
    }

    fn loopback_spelling() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("127.0.0.1".to_string()),
            (0u8..=255, 0u8..=255, 1u8..=254).prop_map(|(a, b, c)| format!("127.{a}.{b}.{c}")),
            Just("localhost".to_string()),
            Just("LocalHost".to_string()),
            Just("localhost.".to_string()),
            Just("[::1]".to_string()),
            Just("[0:0:0:0:0:0:0:1]".to_string()),
            Just("[::ffff:127.0.0.1]".to_string()),
            Just("0.0.0.0".to_string()),
        ]
    }

    fn spelled(host: String, port: u16, explicit_default: bool, slash: bool) -> String {
        let port_part = if port == 80 && !explicit_default {
            String::new()
        } else {
            format!(":{port}")
        };
        format!("http://{host}{port_part}{}", if slash { "/" } else { "" })
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,4}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any two spellings of one loopback server with nested prefixes, in either direction,
        /// overlap; another port or bucket never does.
        #[test]
        fn nested_prefixes_on_one_server_always_overlap(
            h1 in loopback_spelling(), h2 in loopback_spelling(),
            port in prop_oneof![Just(80u16), 1u16..=65535],
            d1 in any::<bool>(), d2 in any::<bool>(), s1 in any::<bool>(), s2 in any::<bool>(),
            outer in proptest::collection::vec(segment(), 0..3),
            inner in proptest::collection::vec(segment(), 0..3),
            swap in any::<bool>(),
        ) {
            let e1 = spelled(h1, port, d1, s1);
            let e2 = spelled(h2, port, d2, s2);
            let outer_prefix = outer.join("/");
            let inner_prefix = outer.iter().chain(inner.iter()).cloned().collect::<Vec<_>>().join("/");
            let (p1, p2) = if swap { (&inner_prefix, &outer_prefix) } else { (&outer_prefix, &inner_prefix) };
            let a = id(Some(&e1), "bkt", p1);
            let b = id(Some(&e2), "bkt", p2);
            prop_assert!(a.overlaps(&b), "{} vs {}", a, b);
            prop_assert!(b.overlaps(&a));
            let other_port = if port == 65535 { 1 } else { port + 1 };
            let c = id(Some(&spelled("127.0.0.1".into(), other_port, true, false)), "bkt", p2);
            prop_assert!(!a.overlaps(&c));
            prop_assert!(!a.overlaps(&id(Some(&e2), "other-bkt", p2)));
        }
    }
}
