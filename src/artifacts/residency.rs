//! The residency rule for artifacts: sensitive models never land in a public cloud's store.
//! Pure and synchronous so the operator can evaluate it while reconciling, before any I/O.

use crate::api::common::{Cloud, DataClass};

/// A copy the residency rule forbids. The operator turns this into a `Forbidden` condition and
/// an Event; the CLI exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "residency: a model of data class {data_class} must not be copied to a store in a {cloud} cloud"
)]
pub struct ResidencyError {
    pub data_class: DataClass,
    pub cloud: Cloud,
}

/// Store hosts that belong to a public cloud whatever a caller declares.
const PUBLIC_CLOUD_HOST_SUFFIXES: &[&str] = &[
    ".amazonaws.com",
    ".amazonaws.com.cn",
    ".googleapis.com",
    ".blob.core.windows.net",
    ".r2.cloudflarestorage.com",
    ".digitaloceanspaces.com",
    ".backblazeb2.com",
    ".wasabisys.com",
    ".linodeobjects.com",
    ".cloud-object-storage.appdomain.cloud",
    ".aliyuncs.com",
];

/// How the cloud of a destination store was decided, for the CLI (the operator passes a pool's
/// declared cloud directly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloudLabel {
    /// Declared by the caller and not contradicted.
    Declared(Cloud),
    /// Not declared: treated as public, since an unlabelled store may be anyone's.
    Unlabelled,
    /// The endpoint is a public cloud's store (AWS when no endpoint is given).
    InferredPublic {
        declared: Option<Cloud>,
        host: String,
    },
}

impl CloudLabel {
    /// The cloud the residency rule is checked against.
    pub fn cloud(&self) -> Cloud {
        match self {
            CloudLabel::Declared(c) => *c,
            CloudLabel::Unlabelled | CloudLabel::InferredPublic { .. } => Cloud::Public,
        }
    }

    /// Why the destination counts as [`CloudLabel::cloud`], for a refusal's message.
    pub fn explain(&self) -> String {
        match self {
            CloudLabel::Declared(c) => format!("the destination was declared {c} (--to-cloud)"),
            CloudLabel::Unlabelled => "the destination's cloud was not declared, so it is treated \
                as public; pass --to-cloud private if the store is in a private cloud"
                .to_string(),
            CloudLabel::InferredPublic { declared, host } => format!(
                "the destination {} is a public cloud's store{}",
                super::error::printable(host),
                if *declared == Some(Cloud::Private) {
                    "; --to-cloud private cannot make it private"
                } else {
                    ""
                }
            ),
        }
    }
}

/// The cloud of a destination at `endpoint` (`None`: AWS) that the caller declared as
/// `declared`: a public cloud's endpoint is public whatever was declared, an undeclared one is
/// public, and only a declared `private` on another endpoint is private.
pub fn destination_cloud(declared: Option<Cloud>, endpoint: Option<&str>) -> CloudLabel {
    let host = match endpoint {
        None => Some("AWS S3 (no endpoint given)".to_string()),
        Some(e) => {
            let authority = e.split_once("://").map_or(e, |(_, rest)| rest);
            let authority = authority.split(['/', '?', '#']).next().unwrap_or("");
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = if host_port.starts_with('[') {
                host_port.split(']').next().unwrap_or("").to_string() + "]"
            } else {
                host_port.split(':').next().unwrap_or("").to_string()
            };
            let canonical = format!(".{}", host.trim_end_matches('.').to_ascii_lowercase());
            PUBLIC_CLOUD_HOST_SUFFIXES
                .iter()
                .any(|s| canonical.ends_with(s))
                .then_some(host)
        }
    };
    match (host, declared) {
        (Some(host), declared) => CloudLabel::InferredPublic { declared, host },
        (None, None) => CloudLabel::Unlabelled,
        (None, Some(c)) => CloudLabel::Declared(c),
    }
}

/// May a model of `data_class` be stored in an artifact store located in `destination`?
/// Delegates to [`DataClass::may_reside_in`] so the rule lives in exactly one place.
pub fn check(data_class: DataClass, destination: Cloud) -> Result<(), ResidencyError> {
    if data_class.may_reside_in(destination) {
        Ok(())
    } else {
        Err(ResidencyError {
            data_class,
            cloud: destination,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unlabelled_and_public_cloud_destinations_are_public() {
        let custom = Some("http://minio.dc1.internal:9000");
        assert_eq!(destination_cloud(None, custom), CloudLabel::Unlabelled);
        assert_eq!(destination_cloud(None, custom).cloud(), Cloud::Public);
        assert_eq!(
            destination_cloud(Some(Cloud::Private), custom).cloud(),
            Cloud::Private
        );
        for endpoint in [
            None,
            Some("https://s3.eu-west-1.amazonaws.com"),
            Some("https://S3.AMAZONAWS.COM./"),
            Some("https://storage.googleapis.com"),
            Some("https://acct.r2.cloudflarestorage.com:443"),
        ] {
            let label = destination_cloud(Some(Cloud::Private), endpoint);
            assert_eq!(label.cloud(), Cloud::Public, "{endpoint:?}");
            assert!(
                label.explain().contains("cannot make it private"),
                "{label:?}"
            );
        }
        assert!(
            destination_cloud(None, custom)
                .explain()
                .contains("--to-cloud private")
        );
    }

    fn endpoint() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}".prop_map(|h| Some(format!("http://{h}:9000"))),
            "[a-z]{1,8}".prop_map(|b| Some(format!("https://{b}.s3.amazonaws.com"))),
            Just(Some("https://storage.googleapis.com".to_string())),
            Just(Some("http://127.0.0.1:9000".to_string())),
        ]
    }

    fn class() -> impl Strategy<Value = DataClass> {
        prop_oneof![
            Just(DataClass::Public),
            Just(DataClass::Internal),
            Just(DataClass::Sensitive)
        ]
    }

    fn declared() -> impl Strategy<Value = Option<Cloud>> {
        prop_oneof![
            Just(None),
            Just(Some(Cloud::Private)),
            Just(Some(Cloud::Public))
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// A sensitive model reaches a destination only when it was explicitly declared private
        /// and its endpoint is no public cloud's; everything else may go anywhere.
        #[test]
        fn sensitive_needs_an_explicit_private_label(
            class in class(), declared in declared(), endpoint in endpoint()
        ) {
            let label = destination_cloud(declared, endpoint.as_deref());
            let allowed = check(class, label.cloud()).is_ok();
            if class == DataClass::Sensitive {
                prop_assert_eq!(allowed, matches!(label, CloudLabel::Declared(Cloud::Private)));
                prop_assert!(declared == Some(Cloud::Private) || !allowed);
                let public_endpoint = endpoint.as_deref().is_none_or(|e| {
                    e.contains("amazonaws.com") || e.contains("googleapis.com")
                });
                prop_assert!(!(public_endpoint && allowed));
            } else {
                prop_assert!(allowed);
            }
        }
    }

    #[test]
    fn only_sensitive_to_public_is_refused() {
        for class in DataClass::ALL {
            assert!(check(class, Cloud::Private).is_ok());
        }
        assert!(check(DataClass::Public, Cloud::Public).is_ok());
        assert!(check(DataClass::Internal, Cloud::Public).is_ok());
        let err = check(DataClass::Sensitive, Cloud::Public).unwrap_err();
        assert_eq!(
            err,
            ResidencyError {
                data_class: DataClass::Sensitive,
                cloud: Cloud::Public
            }
        );
        assert!(err.to_string().contains("sensitive"));
    }
}
