//! Vocabulary shared by the three resources.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// API group of every Skybridge resource.
pub const GROUP: &str = "skybridge.io";
/// Served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Which side of the hybrid estate a pool lives on.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// The company's own data centre: the only place sensitive data may go.
    Private,
    /// A public-cloud region, used for bursting stateless replicas.
    Public,
}

impl Cloud {
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Private => "private",
            Cloud::Public => "public",
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How sensitive the data a component reads is. Ordered from least to most sensitive.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum DataClass {
    /// Public data: may run anywhere.
    Public,
    /// Company-internal data without personal information: private or public pools.
    Internal,
    /// Personal or otherwise regulated data: private pools and private stores only.
    Sensitive,
}

impl DataClass {
    pub const ALL: [DataClass; 3] = [DataClass::Public, DataClass::Internal, DataClass::Sensitive];

    pub fn as_str(self) -> &'static str {
        match self {
            DataClass::Public => "public",
            DataClass::Internal => "internal",
            DataClass::Sensitive => "sensitive",
        }
    }

    /// The residency rule in one place: may data of this class live in `cloud` at all?
    pub fn may_reside_in(self, cloud: Cloud) -> bool {
        !(self == DataClass::Sensitive && cloud == Cloud::Public)
    }
}

impl fmt::Display for DataClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to a key of a Secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Namespace of the Secret; defaults to the operator's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key inside the Secret's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A reference to a whole Secret in the operator's own namespace.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.__namespace__)").message("credentials Secrets are read from the operator's namespace only; remove namespace").field_path(".namespace"))]
pub struct SecretRef {
    /// Name of the Secret, in the operator's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Not supported: must be absent. Kept in the schema only so that objects written before
    /// it was withdrawn stay readable; the operator refuses to read or copy a Secret through a
    /// reference that sets it (store credentials come only from the operator's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
