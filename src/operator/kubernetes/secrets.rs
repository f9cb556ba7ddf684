//! Secrets of the operator's own cluster read through a short-lived cache: every deployment
//! whose pods need a store's credentials shares one read of them per recheck interval, instead
//! of one read per serving pool and reconcile.

use crate::operator::kubernetes::clusters::ClusterClient;
use crate::operator::kubernetes::retry::idempotent;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Data = Arc<BTreeMap<String, ByteString>>;
/// Per (namespace, name): when it was read, and what that read gave.
type Reads = HashMap<(String, String), (Instant, Result<Data, String>)>;

pub struct SecretCache {
    recheck: Duration,
    read: Mutex<Reads>,
}

impl SecretCache {
    pub fn new(recheck: Duration) -> Self {
        Self {
            recheck,
            read: Mutex::new(HashMap::new()),
        }
    }

    /// The data of Secret `namespace/name`, read again when the last read is older than the
    /// recheck interval. A failed read is an error naming the Secret, remembered as long.
    pub async fn read(
        &self,
        cluster: &ClusterClient,
        namespace: &str,
        name: &str,
    ) -> Result<Data, String> {
        let key = (namespace.to_string(), name.to_string());
        if let Some((at, data)) = self.lock().get(&key)
            && at.elapsed() < self.recheck
        {
            return data.clone();
        }
        let api: Api<Secret> = Api::namespaced(cluster.client().await, namespace);
        let data = match idempotent(|| api.get(name)).await {
            Ok(secret) => Ok(Arc::new(secret.data.unwrap_or_default())),
            Err(err) => Err(format!("Secret {namespace}/{name}: {err}")),
        };
        self.lock().insert(key, (Instant::now(), data.clone()));
        data
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reads> {
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }
}
