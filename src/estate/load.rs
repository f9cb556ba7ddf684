//! Reads an estate from YAML files and directories: the only I/O of this module.

use super::Estate;
use super::document::{
    DEFAULT_MAX_YAML_DEPTH, Object, ObjectRef, parse_documents_nested_at_most, printable,
};
use super::validate::validate;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

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
    /// Every part is escaped (`printable`): file names, object names and values come from input.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", printable(&self.file.display().to_string()))?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(object) = &self.object {
            write!(f, ": {object}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {}", printable(field))?;
        }
        write!(f, ": {}", printable(&self.message))
    }
}

/// Caps on the work one load does, so that no input makes it read, parse or hold without bound.
/// Each has a command-line flag to raise it (`skybridge plan --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputLimits {
    /// Largest single YAML file, in bytes.
    pub max_file_bytes: u64,
    /// Most bytes over every file of one load.
    pub max_total_bytes: u64,
    /// Most YAML files in one load.
    pub max_files: usize,
    /// Deepest YAML nesting of a document (see `DEFAULT_MAX_YAML_DEPTH`).
    pub max_yaml_depth: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 8 << 20,
            max_total_bytes: 64 << 20,
            max_files: 10_000,
            max_yaml_depth: DEFAULT_MAX_YAML_DEPTH,
        }
    }
}

/// Directories deeper than this below a given path are not descended into: a symlink loop would
/// otherwise recurse without end.
const MAX_DIRECTORY_DEPTH: usize = 32;

/// `load_paths_within` with the default limits.
pub fn load_paths(paths: &[PathBuf]) -> Result<Estate, Vec<LoadError>> {
    load_paths_within(paths, &InputLimits::default())
}

/// Loads every `.yaml`/`.yml` file under `paths` (files or directories, recursively, in name
/// order), then validates references between the objects. Returns every problem found, not just
/// the first. Work is bounded by `limits`: a file, a load or a document beyond a cap is an error,
/// found before the oversized input is read or parsed. Empty input is an error too: a directory
/// without YAML files, a file without objects, or no objects at all.
pub fn load_paths_within(
    paths: &[PathBuf],
    limits: &InputLimits,
) -> Result<Estate, Vec<LoadError>> {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        let before = files.len();
        collect_files(path, 0, limits.max_files, &mut files, &mut errors);
        if files.len() == before && std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            errors.push(file_error(
                path,
                "the directory holds no .yaml or .yml files".into(),
            ));
        }
    }
    if files.len() > limits.max_files {
        errors.push(file_error(
            paths.first().map_or(Path::new(""), |p| p.as_path()),
            format!(
                "more than the limit of {} YAML files (raise it with --max-files)",
                limits.max_files
            ),
        ));
        return Err(errors);
    }
    let mut estate = Estate::default();
    // Where each object came from, for messages about references between objects.
    let mut origins: Vec<(ObjectRef, PathBuf, Option<usize>)> = Vec::new();
    let mut total_bytes = 0u64;
    for file in files {
        let text = match read_bounded(&file, limits.max_file_bytes) {
            Ok(text) => text,
            Err(message) => {
                errors.push(file_error(&file, message));
                continue;
            }
        };
        total_bytes = total_bytes.saturating_add(text.len() as u64);
        if total_bytes > limits.max_total_bytes {
            errors.push(file_error(
                &file,
                format!(
                    "the files read so far hold more than the limit of {} bytes in all \
                     (raise it with --max-input-bytes)",
                    limits.max_total_bytes
                ),
            ));
            return Err(errors);
        }
        let documents = parse_documents_nested_at_most(&text, limits.max_yaml_depth);
        if documents.is_empty() && !super::document::holds_documents(&text) {
            errors.push(file_error(&file, "the file holds no objects".into()));
        }
        for parsed in documents {
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
                    estate.insert(object);
                }
            }
        }
    }
    if errors.is_empty()
        && estate.pools.is_empty()
        && estate.policies.is_empty()
        && estate.deployments.is_empty()
    {
        let file = paths.first().cloned().unwrap_or_default();
        errors.push(file_error(&file, "no objects found".into()));
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

fn file_error(file: &Path, message: String) -> LoadError {
    LoadError {
        file: file.to_path_buf(),
        line: None,
        object: None,
        field: None,
        message,
    }
}

/// The text of `file`, or why it cannot be had: missing, unreadable, over `max_bytes` (checked
/// before reading, and again while reading, for files that grow or lie about their size), or not
/// UTF-8.
fn read_bounded(file: &Path, max_bytes: u64) -> Result<String, String> {
    let over =
        || format!("larger than the limit of {max_bytes} bytes (raise it with --max-file-bytes)");
    let handle = std::fs::File::open(file).map_err(|err| format!("cannot read: {err}"))?;
    if handle.metadata().is_ok_and(|m| m.len() > max_bytes) {
        return Err(over());
    }
    let mut bytes = Vec::new();
    handle
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read: {err}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(over());
    }
    String::from_utf8(bytes).map_err(|err| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            err.utf8_error().valid_up_to()
        )
    })
}

/// Adds the YAML files under `path` to `files`, stopping once there are more than `max_files`
/// (the caller reports that), so that a huge directory tree is not listed in full.
fn collect_files(
    path: &Path,
    depth: usize,
    max_files: usize,
    files: &mut Vec<PathBuf>,
    errors: &mut Vec<LoadError>,
) {
    if files.len() > max_files {
        return;
    }
    if depth > MAX_DIRECTORY_DEPTH {
        errors.push(file_error(
            path,
            format!("directories nest deeper than {MAX_DIRECTORY_DEPTH} levels (a symlink loop?)"),
        ));
        return;
    }
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
    if !metadata.is_dir() {
        errors.push(file_error(path, "not a regular file or a directory".into()));
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
            collect_files(&child, depth + 1, max_files, files, errors);
        }
    }
}
