//! Reads an estate from YAML files and directories: the only I/O of this module.

use super::Estate;
use super::document::{Object, ObjectRef, parse_documents};
use super::validate::validate;
use kube::ResourceExt;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One problem with the input, naming the file and, where known, the line, object and field.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub object: Option<ObjectRef>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Loads every `.yaml`/`.yml` file under `paths` (files or directories, recursively, in name
/// order), then validates references between the objects. Returns every problem found, not just
/// the first.
pub fn load_paths(paths: &[PathBuf]) -> Result<Estate, Vec<LoadError>> {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files, &mut errors);
    }
    let mut estate = Estate::default();
    // Where each object came from, for messages about references between objects.
    let mut origins: Vec<(ObjectRef, PathBuf, Option<usize>)> = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(err) => {
                errors.push(file_error(&file, format!("cannot read: {err}")));
                continue;
            }
        };
        for parsed in parse_documents(&text) {
            match parsed {
                Err(err) => errors.push(LoadError {
                    file: file.clone(),
                    line: err.line,
                    object: err.object,
                    field: err.field,
                    message: err.message,
                }),
                Ok(object) => {
                    let reference = match &object {
                        Object::Pool(o) => ObjectRef::of(o.as_ref()),
                        Object::Policy(o) => ObjectRef::of(o.as_ref()),
                        Object::Deployment(o) => ObjectRef::of(o.as_ref()),
                    };
                    if origins.iter().any(|(r, _, _)| *r == reference) {
                        errors.push(LoadError {
                            file: file.clone(),
                            line: None,
                            object: Some(reference),
                            field: Some("metadata.name".into()),
                            message: "defined more than once".into(),
                        });
                        continue;
                    }
                    origins.push((reference, file.clone(), None));
                    insert(&mut estate, object);
                }
            }
        }
    }
    for issue in validate(&estate) {
        let origin = origins.iter().find(|(r, _, _)| *r == issue.object);
        errors.push(LoadError {
            file: origin.map(|(_, f, _)| f.clone()).unwrap_or_default(),
            line: origin.and_then(|(_, _, l)| *l),
            object: Some(issue.object),
            field: Some(issue.field),
            message: issue.message,
        });
    }
    if errors.is_empty() {
        Ok(estate)
    } else {
        Err(errors)
    }
}

fn insert(estate: &mut Estate, object: Object) {
    match object {
        Object::Pool(pool) => {
            estate.pools.insert(pool.name_any(), Arc::new(*pool));
        }
        Object::Policy(policy) => {
            estate.policies.insert(policy.name_any(), Arc::new(*policy));
        }
        Object::Deployment(deployment) => {
            estate
                .deployments
                .insert(Estate::key_of(&deployment), Arc::new(*deployment));
        }
    }
}

fn file_error(file: &Path, message: String) -> LoadError {
    LoadError {
        file: file.to_path_buf(),
        line: None,
        object: None,
        field: None,
        message,
    }
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<LoadError>) {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(err) => {
            errors.push(file_error(path, format!("cannot open: {err}")));
            return;
        }
    };
    if metadata.is_file() {
        files.push(path.to_path_buf());
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(err) => {
            errors.push(file_error(path, format!("cannot list directory: {err}")));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        let is_yaml = child.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if child.is_dir() || is_yaml {
            collect_files(&child, files, errors);
        }
    }
}
