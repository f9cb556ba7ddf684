//! What a model *is*, whatever a deployment calls it: the store that holds its bytes and the
//! normalised key under which they live. Pure.
//!
//! Residency is a property of the model, not of one deployment: every deployment whose model
//! shares bytes with another's (same store, one key inside the other, however spelled) gets the
//! strictest data class of all of them ([`ModelClasses`]). The planner's input, validation and the
//! operator's artifact routes all take a model's class from here, so a second deployment cannot
//! relax the residency of a sensitive model by naming it differently.
//!
//! Spellings that name the same bytes and are recognised:
//! - keys: leading, trailing and repeated `/`, `.` segments, and `..` segments (resolved);
//! - stores: endpoint scheme and host case, a trailing `.` or `/`, the scheme's default port,
//!   every AWS S3 endpoint (`None`, `s3.amazonaws.com`, regional and dual-stack hosts) as AWS;
//!   a store reached through any pool (the store is its endpoint and bucket, not the pool);
//! - copies: the copy of a model that the operator keeps in a pool's store
//!   (`<store prefix>/<source bucket>/<source key>`) is the same model as its source.
//!
//! Matching errs towards *more* sharing: a spurious match only makes a model stricter. Two
//! spellings this cannot see through (two host names or addresses of one server, a DNS alias)
//! are listed in `docs/security.md`.

use super::Estate;
use crate::api::{ArtifactStore, ComputePool, DataClass, ModelDeployment};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The server of a store, canonical.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// Amazon S3 (bucket names are global there, so the region does not matter).
    Aws,
    /// Another S3-compatible server: lower-case host, explicit port, path without trailing `/`.
    Url {
        host: String,
        port: u16,
        path: String,
    },
    /// Not known (the source pool is missing or has no store): matches every endpoint.
    Unknown,
}

impl Endpoint {
    /// The canonical form of an `artifactStore.endpoint` (`None`: AWS).
    pub fn parse(endpoint: Option<&str>) -> Self {
        let Some(raw) = endpoint else {
            return Endpoint::Aws;
        };
        let raw = raw.trim();
        let lower = raw.to_ascii_lowercase();
        let (default_port, rest) = if let Some(rest) = lower.strip_prefix("https://") {
            (443, rest)
        } else if let Some(rest) = lower.strip_prefix("http://") {
            (80, rest)
        } else {
            (443, lower.as_str())
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        // Credentials in the URL do not change the server.
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal's colons are inside brackets.
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().unwrap_or(default_port))
            }
            _ => (authority, default_port),
        };
        let host = host.trim_end_matches('.').to_string();
        if is_aws_s3_host(&host) {
            return Endpoint::Aws;
        }
        Endpoint::Url {
            host,
            port,
            path: normalise_key(path),
        }
    }

    fn matches(&self, other: &Endpoint) -> bool {
        self == other || *self == Endpoint::Unknown || *other == Endpoint::Unknown
    }
}

/// `s3.amazonaws.com`, `s3.<region>.amazonaws.com`, `s3-<region>.amazonaws.com`,
/// `s3.dualstack.<region>.amazonaws.com` (and `.com.cn`).
fn is_aws_s3_host(host: &str) -> bool {
    let Some(rest) = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))
    else {
        return false;
    };
    rest == "s3" || rest.starts_with("s3.") || rest.starts_with("s3-")
}

/// One bucket of one server.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreIdentity {
    pub endpoint: Endpoint,
    pub bucket: String,
}

impl StoreIdentity {
    /// The store of a pool's `artifactStore`.
    pub fn of(store: &ArtifactStore) -> Self {
        Self {
            endpoint: Endpoint::parse(store.endpoint.as_deref()),
            bucket: store.bucket.trim().to_ascii_lowercase(),
        }
    }

    /// Whether both name the same bucket of the same server (an unknown server matches any).
    pub fn same_as(&self, other: &StoreIdentity) -> bool {
        self.bucket == other.bucket && self.endpoint.matches(&other.endpoint)
    }
}

/// A key with empty and `.` segments dropped and `..` resolved: `a//b/./c/` is `a/b/c`.
pub fn normalise_key(key: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in key.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    segments.join("/")
}

/// Where a model's bytes are: a store and the normalised key prefix of every object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelLocation {
    pub store: StoreIdentity,
    /// Normalised (see [`normalise_key`]); empty: the whole bucket.
    pub key: String,
}

impl ModelLocation {
    /// Whether the two may share objects: same store, and one key is the other or inside it.
    pub fn overlaps(&self, other: &ModelLocation) -> bool {
        self.store.same_as(&other.store)
            && (is_within(&self.key, &other.key) || is_within(&other.key, &self.key))
    }
}

/// Whether `key` is `outer` or below it, segment-wise (`a/bc` is not within `a/b`).
fn is_within(key: &str, outer: &str) -> bool {
    outer.is_empty()
        || key == outer
        || (key.len() > outer.len()
            && key.starts_with(outer)
            && key.as_bytes()[outer.len()] == b'/')
}

/// The bucket and the key of an `s3://bucket/key` URI (the `s3://` is optional here; the schema
/// requires it).
pub fn split_uri(uri: &str) -> (String, String) {
    let rest = uri.trim();
    let rest = rest
        .get(..5)
        .filter(|scheme| scheme.eq_ignore_ascii_case("s3://"))
        .map_or(rest, |_| &rest[5..]);
    let rest = rest.trim_start_matches('/');
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (bucket.to_ascii_lowercase(), normalise_key(key))
}

/// Where a deployment's model comes from: the endpoint of its source pool's store, the bucket
/// and key of `source.uri`. The endpoint is [`Endpoint::Unknown`] when the pool or its store is
/// missing (validation reports that), so the location matches that bucket on every server.
pub fn source_location(
    deployment: &ModelDeployment,
    pools: &BTreeMap<String, Arc<ComputePool>>,
) -> ModelLocation {
    let source = &deployment.spec.model.source;
    let endpoint = pools
        .get(&source.pool)
        .and_then(|p| p.spec.artifact_store.as_ref())
        .map_or(Endpoint::Unknown, |s| {
            Endpoint::parse(s.endpoint.as_deref())
        });
    let (bucket, key) = split_uri(&source.uri);
    ModelLocation {
        store: StoreIdentity { endpoint, bucket },
        key,
    }
}

/// Where the operator keeps the copy of the model at `source` in `store`:
/// `<store prefix>/<source bucket>/<source key>` (see `operator::artifacts::plan::model_path`).
pub fn copy_location(source: &ModelLocation, store: &ArtifactStore) -> ModelLocation {
    let prefix = store.prefix.as_deref().unwrap_or_default();
    ModelLocation {
        store: StoreIdentity::of(store),
        key: normalise_key(&format!("{prefix}/{}/{}", source.store.bucket, source.key)),
    }
}

/// Every location a deployment's model is or may be kept at: its source, and its copy in the
/// store of every pool of `pools` other than the source store itself.
pub fn model_locations(
    deployment: &ModelDeployment,
    pools: &BTreeMap<String, Arc<ComputePool>>,
) -> Vec<ModelLocation> {
    locations_with(deployment, pools, &pool_stores(pools))
}

/// The store of every pool that has one, with its normalised prefix.
fn pool_stores(pools: &BTreeMap<String, Arc<ComputePool>>) -> Vec<(StoreIdentity, String)> {
    let mut stores: Vec<(StoreIdentity, String)> = pools
        .values()
        .filter_map(|p| p.spec.artifact_store.as_ref())
        .map(|s| {
            (
                StoreIdentity::of(s),
                normalise_key(s.prefix.as_deref().unwrap_or_default()),
            )
        })
        .collect();
    // Pools sharing a store (and prefix) hold one copy.
    stores.sort();
    stores.dedup();
    stores
}

fn locations_with(
    deployment: &ModelDeployment,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    stores: &[(StoreIdentity, String)],
) -> Vec<ModelLocation> {
    let source = source_location(deployment, pools);
    let mut out = Vec::with_capacity(stores.len() + 1);
    for (store, prefix) in stores {
        if store.same_as(&source.store) {
            continue;
        }
        let mut key = prefix.clone();
        for part in [source.store.bucket.as_str(), source.key.as_str()] {
            if !part.is_empty() {
                if !key.is_empty() {
                    key.push('/');
                }
                key.push_str(part);
            }
        }
        out.push(ModelLocation {
            store: store.clone(),
            key,
        });
    }
    out.push(source);
    out
}

/// The data class of every deployment's model in an estate: the strictest class of every
/// component of every deployment sharing bytes with it, directly or through others (a copy of
/// a copy, a deployment reading a parent prefix). Computed once per estate.
#[derive(Clone, Debug, Default)]
pub struct ModelClasses {
    by_deployment: HashMap<(String, String), DataClass>,
}

impl ModelClasses {
    pub fn of(estate: &Estate) -> Self {
        let deployments: Vec<(&(String, String), &Arc<ModelDeployment>)> =
            estate.deployments.iter().collect();
        let stores = pool_stores(&estate.pools);
        let locations: Vec<Vec<ModelLocation>> = deployments
            .iter()
            .map(|(_, d)| locations_with(d, &estate.pools, &stores))
            .collect();
        // Index: bucket -> endpoint -> key -> deployments with a location there.
        let mut index: HashMap<&str, HashMap<&Endpoint, HashMap<&str, Vec<usize>>>> =
            HashMap::new();
        for (i, locs) in locations.iter().enumerate() {
            for loc in locs {
                index
                    .entry(loc.store.bucket.as_str())
                    .or_default()
                    .entry(&loc.store.endpoint)
                    .or_default()
                    .entry(loc.key.as_str())
                    .or_default()
                    .push(i);
            }
        }
        let mut sets = DisjointSets::new(deployments.len());
        for (i, locs) in locations.iter().enumerate() {
            for loc in locs {
                let Some(by_endpoint) = index.get(loc.store.bucket.as_str()) else {
                    continue;
                };
                // Every location at this key or above it on a matching server: descendants find
                // their ancestors, so every overlapping pair is joined from one side.
                for (endpoint, keys) in by_endpoint {
                    if !loc.store.endpoint.matches(endpoint) {
                        continue;
                    }
                    for ancestor in ancestors(&loc.key) {
                        for &j in keys.get(ancestor).into_iter().flatten() {
                            sets.union(i, j);
                        }
                    }
                }
            }
        }
        let mut strictest: HashMap<usize, DataClass> = HashMap::new();
        for (i, (_, d)) in deployments.iter().enumerate() {
            let class = d.spec.model_data_class();
            let root = sets.find(i);
            let entry = strictest.entry(root).or_insert(class);
            *entry = (*entry).max(class);
        }
        let by_deployment = deployments
            .iter()
            .enumerate()
            .map(|(i, (key, _))| ((*key).clone(), strictest[&sets.find(i)]))
            .collect();
        Self { by_deployment }
    }

    /// The class of `deployment`'s model: its own strictest component, or stricter when another
    /// deployment of the estate shares the model.
    pub fn class_of(&self, deployment: &ModelDeployment) -> DataClass {
        let own = deployment.spec.model_data_class();
        self.by_deployment
            .get(&Estate::key_of(deployment))
            .map_or(own, |shared| own.max(*shared))
    }
}

/// `a/b/c` -> `""`, `a`, `a/b`, `a/b/c`.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    std::iter::once("")
        .chain(
            key.match_indices('/')
                .map(move |(i, _)| &key[..i])
                .filter(|k| !k.is_empty()),
        )
        .chain(std::iter::once(key).filter(|k| !k.is_empty()))
}

/// Union-find over deployment indices.
struct DisjointSets {
    parent: Vec<usize>,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_normalise_every_spelling_of_one_prefix() {
        for spelling in [
            "team/deepfm/v3",
            "team/deepfm/v3/",
            "/team//deepfm/v3",
            "team/./deepfm/v3",
            "team/x/../deepfm/v3",
        ] {
            assert_eq!(normalise_key(spelling), "team/deepfm/v3", "{spelling}");
        }
        assert_eq!(normalise_key("../.."), "");
    }

    #[test]
    fn endpoints_are_canonical() {
        let minio = Endpoint::parse(Some("http://minio:9000"));
        for spelling in [
            "http://MINIO:9000/",
            "HTTP://minio.:9000",
            "http://user@minio:9000",
        ] {
            assert_eq!(Endpoint::parse(Some(spelling)), minio, "{spelling}");
        }
        assert_eq!(
            Endpoint::parse(Some("https://store.example")),
            Endpoint::parse(Some("https://store.example:443/"))
        );
        assert_eq!(
            Endpoint::parse(Some("http://store.example")),
            Endpoint::parse(Some("http://store.example:80"))
        );
        assert_ne!(
            Endpoint::parse(Some("http://minio:9000")),
            Endpoint::parse(Some("http://minio:9001"))
        );
        for aws in [
            "https://s3.amazonaws.com",
            "https://s3.eu-central-1.amazonaws.com",
            "https://s3-eu-west-1.amazonaws.com/",
            "https://s3.dualstack.us-east-1.amazonaws.com",
        ] {
            assert_eq!(Endpoint::parse(Some(aws)), Endpoint::Aws, "{aws}");
        }
        assert_eq!(Endpoint::parse(None), Endpoint::Aws);
        assert_ne!(
            Endpoint::parse(Some("https://notaws.example")),
            Endpoint::Aws
        );
    }

    #[test]
    fn uris_split_into_bucket_and_normalised_key() {
        assert_eq!(
            split_uri("s3://models/team//deepfm/v3/"),
            ("models".into(), "team/deepfm/v3".into())
        );
        assert_eq!(split_uri("S3://models"), ("models".into(), String::new()));
    }

    #[test]
    fn overlap_is_segment_wise_and_across_spellings() {
        let at = |endpoint: Option<&str>, key: &str| ModelLocation {
            store: StoreIdentity {
                endpoint: Endpoint::parse(endpoint),
                bucket: "models".into(),
            },
            key: normalise_key(key),
        };
        let model = at(Some("http://minio:9000"), "team/deepfm/v3");
        assert!(model.overlaps(&at(Some("http://MINIO:9000/"), "team/deepfm/v3/")));
        assert!(model.overlaps(&at(Some("http://minio:9000"), "team")));
        assert!(model.overlaps(&at(Some("http://minio:9000"), "")));
        assert!(model.overlaps(&at(Some("http://minio:9000"), "team/deepfm/v3/weights")));
        assert!(!model.overlaps(&at(Some("http://minio:9000"), "team/deepfm/v30")));
        assert!(!model.overlaps(&at(Some("http://minio:9001"), "team/deepfm/v3")));
        let unknown = ModelLocation {
            store: StoreIdentity {
                endpoint: Endpoint::Unknown,
                bucket: "models".into(),
            },
            key: "team".into(),
        };
        assert!(model.overlaps(&unknown));
    }

    #[test]
    fn copies_are_where_the_operator_puts_them() {
        let store: ArtifactStore = serde_yaml_ng::from_str(
            "{bucket: mirror, prefix: /copies/, endpoint: 'http://ceph:7480'}",
        )
        .unwrap();
        let source = ModelLocation {
            store: StoreIdentity {
                endpoint: Endpoint::Aws,
                bucket: "models".into(),
            },
            key: "team/m".into(),
        };
        let copy = copy_location(&source, &store);
        assert_eq!(copy.key, "copies/models/team/m");
        assert_eq!(copy.store, StoreIdentity::of(&store));
        let location = crate::artifacts::StoreLocation::from_artifact_store(
            &store,
            "models/team/m",
            crate::artifacts::Credentials::DefaultChain,
        )
        .unwrap();
        assert_eq!(location.prefix, copy.key, "the sync library agrees");
    }

    #[test]
    fn ancestors_of_a_key() {
        assert_eq!(
            ancestors("a/b/c").collect::<Vec<_>>(),
            vec!["", "a", "a/b", "a/b/c"]
        );
        assert_eq!(ancestors("").collect::<Vec<_>>(), vec![""]);
    }
}
