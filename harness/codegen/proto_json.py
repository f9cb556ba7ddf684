#!/usr/bin/env python3
"""Generates harness/src/proto/generated.rs: JSON conversion of the k8s-pb (prost) messages that
the harness decodes from protobuf request bodies, for the kinds it serves.

Field structure comes from k8s-pb's generated source (the Kubernetes .proto files through
prost-build); JSON field names come from k8s-openapi's serde code, so that `clusterIPs` is not
guessed from `cluster_i_ps`. Run it again when either crate is upgraded:

    python3 harness/codegen/proto_json.py ~/.cargo/registry/src/*/k8s-pb-0.9.0 \
        ~/.cargo/registry/src/*/k8s-openapi-0.29.0 > harness/src/proto/generated.rs && cargo fmt --all
"""
import os
import re
import sys

PB, OPENAPI = sys.argv[1], sys.argv[2]

# The top-level kinds the harness accepts as protobuf: (apiVersion, kind, k8s-pb path).
ROOTS = [
    ("v1", "Namespace", "api::core::v1::Namespace"),
    ("v1", "Node", "api::core::v1::Node"),
    ("v1", "Pod", "api::core::v1::Pod"),
    ("v1", "Secret", "api::core::v1::Secret"),
    ("v1", "ConfigMap", "api::core::v1::ConfigMap"),
    ("v1", "Service", "api::core::v1::Service"),
    ("v1", "Event", "api::core::v1::Event"),
    ("events.k8s.io/v1", "Event", "api::events::v1::Event"),
    ("apps/v1", "Deployment", "api::apps::v1::Deployment"),
    ("coordination.k8s.io/v1", "Lease", "api::coordination::v1::Lease"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview",
     "api::authorization::v1::SelfSubjectAccessReview"),
    ("meta.k8s.io/v1", "DeleteOptions", "apimachinery::pkg::apis::meta::v1::DeleteOptions"),
    ("v1", "DeleteOptions", "apimachinery::pkg::apis::meta::v1::DeleteOptions"),
]
# Messages whose JSON form is not an object of their fields: written by hand in proto/mod.rs.
SPECIAL = {
    "apimachinery::pkg::apis::meta::v1::Time",
    "apimachinery::pkg::apis::meta::v1::MicroTime",
    "apimachinery::pkg::apis::meta::v1::Duration",
    "apimachinery::pkg::apis::meta::v1::FieldsV1",
    "apimachinery::pkg::api::resource::Quantity",
    "apimachinery::pkg::util::intstr::IntOrString",
    "apimachinery::pkg::runtime::RawExtension",
}


def norm(name):
    return name.replace("_", "").replace("$", "").lower()


# JSON names, keyed by the normalised Rust field name.
json_names = {}
for root, _, files in os.walk(os.path.join(OPENAPI, "src")):
    for f in files:
        if not f.endswith(".rs"):
            continue
        text = open(os.path.join(root, f)).read()
        for js, rust in re.findall(r'"([A-Za-z0-9$_\-.]+)" => Field::Key_([a-z0-9_]+)', text):
            json_names.setdefault(norm(rust), set()).add(js)

structs = {}  # path -> list of (field, attr, type)
for root, _, files in os.walk(os.path.join(PB, "src")):
    for f in files:
        if f != "mod.rs":
            continue
        rel = os.path.relpath(root, os.path.join(PB, "src"))
        module = [] if rel == "." else rel.split(os.sep)
        lines = open(os.path.join(root, f)).read().split("\n")
        i = 0
        while i < len(lines):
            m = re.match(r"pub struct (\w+) \{", lines[i])
            if not m:
                i += 1
                continue
            name = m.group(1)
            fields = []
            i += 1
            attr = None
            while not lines[i].startswith("}"):
                s = lines[i].strip()
                if s.startswith("#[prost("):
                    attr = s
                elif s.startswith("pub ") and attr:
                    decl = s
                    while not decl.endswith(",") or decl.count("<") != decl.count(">"):
                        i += 1
                        decl += lines[i].strip()
                    fname, ftype = decl[4:-1].split(":", 1)
                    fields.append((fname.strip(), attr, ftype.strip()))
                    attr = None
                i += 1
            structs["::".join(module + [name])] = (module, fields)
            i += 1


def resolve(module, ty):
    """The k8s-pb path of a message type named in `module`."""
    parts = ty.split("::")
    mod = list(module)
    while parts[0] == "super":
        mod.pop()
        parts.pop(0)
    return "::".join(mod + parts)


def inner_type(ftype):
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<"):
        if ftype.startswith(wrapper):
            return ftype[len(wrapper):-1].strip().rstrip(",")
    m = re.match(r"::prost::alloc::collections::BTreeMap<\s*::prost::alloc::string::String,\s*(.*?),?>$", ftype)
    if m:
        return m.group(1).strip().rstrip(",")
    return ftype


def camel(rust):
    rust = rust.removeprefix("r#")
    head, *rest = rust.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def json_name(field):
    plain = field.removeprefix("r#")
    found = json_names.get(norm(plain))
    if not found:
        return camel(plain)
    if len(found) > 1:
        c = camel(plain)
        if c in found:
            return c
        raise SystemExit(f"ambiguous JSON name for {field}: {found}")
    return next(iter(found))


needed, queue = set(), [r[2] for r in ROOTS]
while queue:
    p = queue.pop()
    if p in needed or p in SPECIAL:
        continue
    needed.add(p)
    module, fields = structs[p]
    for fname, attr, ftype in fields:
        if "message" in attr:
            queue.append(resolve(module, inner_type(ftype)))

out = ["// @generated by harness/codegen/proto_json.py from k8s-pb and k8s-openapi: do not edit.",
       "//! JSON form of the protobuf messages of the kinds the harness accepts as protobuf.",
       "",
       "use serde_json::{Map, Value};",
       "",
       "use super::*;",
       ""]
for p in sorted(needed):
    module, fields = structs[p]
    out.append(f"impl ToJson for k8s_pb::{p} {{")
    out.append("    fn to_json(&self) -> Value {")
    out.append("        let mut m = Map::new();")
    for fname, attr, ftype in fields:
        js = json_name(fname)
        kind = re.match(r"#\[prost\((\w+)", attr).group(1)
        if kind == "btree_map":
            value = re.search(r'btree_map = "string, (\w+)"', attr).group(1)
            helper = {"string": "map_str", "bytes": "map_bytes", "message": "map_msg"}[value]
        else:
            scalar = {"string": "str", "bool": "bool", "int32": "i32", "int64": "i64",
                      "double": "f64", "bytes": "bytes", "message": "msg"}[kind]
            helper = ("vec_" if "repeated" in attr else "put_") + scalar
        out.append(f'        {helper}(&mut m, "{js}", &self.{fname});')
    out.append("        Value::Object(m)")
    out.append("    }")
    out.append("}")
    out.append("")
out.append("/// Decode the protobuf `raw` of an object of `api_version` and `kind` into its JSON form.")
out.append("pub(super) fn decode_object(api_version: &str, kind: &str, raw: &[u8]) -> Option<Result<Value, prost::DecodeError>> {")
out.append("    use prost::Message;")
out.append("    Some(match (api_version, kind) {")
for av, kind, p in ROOTS:
    out.append(f'        ("{av}", "{kind}") => k8s_pb::{p}::decode(raw).map(|o| o.to_json()),')
out.append("        _ => return None,")
out.append("    })")
out.append("}")
print("\n".join(out))
