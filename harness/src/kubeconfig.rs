//! Kubeconfig files pointing kubectl and kube::Client at a harness cluster.

/// A kubeconfig with one cluster, context and (credential-less) user, all named `name`.
pub fn kubeconfig_yaml(name: &str, url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {url}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}
    namespace: default
current-context: {name}
users:
- name: {name}
  user: {{}}
preferences: {{}}
"
    )
}
