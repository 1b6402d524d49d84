//! The twin edit language and its limits. A [`TwinPatch`] is either a JSON Merge Patch
//! (RFC 7396) or a list of [`PathOp`]s addressed by JSON pointers (RFC 6901). Everything is
//! checked before the document is touched: nesting depth, string sizes, operation count,
//! pointer syntax. Knows nothing of automerge.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreError;

/// Deepest nesting of objects and arrays in a patch value.
pub const MAX_PATCH_DEPTH: usize = 32;
/// Longest string (value or object key) in a patch, in bytes.
pub const MAX_PATCH_STRING_BYTES: usize = 64 * 1024;
/// Most path operations in one patch.
pub const MAX_PATCH_OPS: usize = 1000;
/// Most segments in one JSON pointer.
pub const MAX_PATH_SEGMENTS: usize = 32;
/// Most JSON nodes (values, including nested ones) in one patch.
const MAX_PATCH_NODES: usize = 100_000;

/// One edit of a twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TwinPatch {
    /// Path operations, applied in order as one change: `{"ops": [...]}`.
    Ops {
        /// The operations.
        ops: Vec<PathOp>,
    },
    /// A JSON Merge Patch (RFC 7396); must be an object (a twin's root is an object).
    Merge(Value),
}

/// One path operation. Paths are JSON pointers (`/desired/sources/system/interval`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PathOp {
    /// Sets the value at `path`, creating missing parent objects (not lists).
    Set {
        /// Where.
        path: String,
        /// The new value (any JSON).
        value: Value,
    },
    /// Removes the value at `path`; it must exist.
    Delete {
        /// Where.
        path: String,
    },
    /// Adds `by` to the counter at `path` (a missing value becomes a counter starting at
    /// `by`). Concurrent increments add up instead of overwriting each other.
    Increment {
        /// Where.
        path: String,
        /// How much (default 1; negative decrements).
        #[serde(default = "one")]
        by: i64,
    },
    /// Inserts `value` into the list holding `path`'s last segment, at that index (`-`
    /// appends).
    Insert {
        /// Where: list pointer plus index.
        path: String,
        /// The value inserted.
        value: Value,
    },
}

fn one() -> i64 {
    1
}

impl PathOp {
    /// The operation's JSON pointer.
    pub fn path(&self) -> &str {
        match self {
            PathOp::Set { path, .. }
            | PathOp::Delete { path }
            | PathOp::Increment { path, .. }
            | PathOp::Insert { path, .. } => path,
        }
    }
}

impl TwinPatch {
    /// Parses a request body: `{"ops": [...]}` is a list of path operations, any other JSON
    /// object a merge patch.
    pub fn from_json(key: &str, body: Value) -> Result<TwinPatch, StoreError> {
        if let Value::Object(m) = &body
            && m.len() == 1
            && m.contains_key("ops")
        {
            return serde_json::from_value::<Vec<PathOp>>(m["ops"].clone())
                .map(|ops| TwinPatch::Ops { ops })
                .map_err(|e| invalid(key, format!("bad path operation list: {e}")));
        }
        Ok(TwinPatch::Merge(body))
    }

    /// Checks every limit and every pointer. `max_bytes` bounds the encoded patch.
    pub fn validate(&self, key: &str, max_bytes: usize) -> Result<(), StoreError> {
        let size = serde_json::to_vec(self)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > max_bytes {
            return Err(StoreError::ValueTooLarge {
                key: key.to_owned(),
                size,
                max: max_bytes,
            });
        }
        let mut nodes = 0;
        match self {
            TwinPatch::Merge(v) => {
                if !v.is_object() {
                    return Err(invalid(
                        key,
                        "a merge patch must be a JSON object (a twin's root is always an object)",
                    ));
                }
                check_value(key, "", v, 0, &mut nodes)
            }
            TwinPatch::Ops { ops } => {
                if ops.is_empty() {
                    return Err(invalid(key, "the operation list is empty"));
                }
                if ops.len() > MAX_PATCH_OPS {
                    return Err(invalid(
                        key,
                        format!(
                            "{} operations, over the limit of {MAX_PATCH_OPS}",
                            ops.len()
                        ),
                    ));
                }
                for op in ops {
                    let segs = parse_pointer(key, op.path())?;
                    if segs.is_empty() {
                        return Err(invalid(
                            key,
                            "path \"\" (the root) cannot be set, deleted or incremented; use a merge patch",
                        ));
                    }
                    let depth = segs.len();
                    match op {
                        PathOp::Set { value, .. } | PathOp::Insert { value, .. } => {
                            check_value(key, op.path(), value, depth, &mut nodes)?
                        }
                        PathOp::Delete { .. } | PathOp::Increment { .. } => {}
                    }
                }
                Ok(())
            }
        }
    }
}

pub(crate) fn invalid(key: &str, problem: impl Into<String>) -> StoreError {
    StoreError::InvalidPatch {
        key: key.chars().take(64).collect(),
        problem: problem.into(),
    }
}

fn check_value(
    key: &str,
    at: &str,
    v: &Value,
    depth: usize,
    nodes: &mut usize,
) -> Result<(), StoreError> {
    *nodes += 1;
    if *nodes > MAX_PATCH_NODES {
        return Err(invalid(
            key,
            format!("more than {MAX_PATCH_NODES} JSON values in one patch"),
        ));
    }
    if depth > MAX_PATCH_DEPTH {
        return Err(invalid(
            key,
            format!("value at {at:?} is nested deeper than {MAX_PATCH_DEPTH} levels"),
        ));
    }
    match v {
        Value::String(s) if s.len() > MAX_PATCH_STRING_BYTES => Err(invalid(
            key,
            format!(
                "string at {at:?} is {} bytes, over the limit of {MAX_PATCH_STRING_BYTES}",
                s.len()
            ),
        )),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_value(key, &format!("{at}/{i}"), x, depth + 1, nodes)),
        Value::Object(m) => m.iter().try_for_each(|(k, x)| {
            if k.len() > MAX_PATCH_STRING_BYTES {
                return Err(invalid(
                    key,
                    format!("an object key under {at:?} is over {MAX_PATCH_STRING_BYTES} bytes"),
                ));
            }
            let p = format!("{at}/{}", escape(k));
            check_value(key, &p, x, depth + 1, nodes)
        }),
        _ => Ok(()),
    }
}

/// Escapes one pointer segment (RFC 6901: `~` → `~0`, `/` → `~1`).
pub(crate) fn escape(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

/// Splits a JSON pointer into unescaped segments. `""` is the root (no segment).
pub(crate) fn parse_pointer(key: &str, path: &str) -> Result<Vec<String>, StoreError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(invalid(
            key,
            format!(
                "path {:?} is not a JSON pointer (it must start with '/')",
                short(path)
            ),
        ));
    };
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.len() > MAX_PATH_SEGMENTS {
        return Err(invalid(
            key,
            format!(
                "path {:?} has more than {MAX_PATH_SEGMENTS} segments",
                short(path)
            ),
        ));
    }
    segs.into_iter()
        .map(|s| {
            let mut out = String::with_capacity(s.len());
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                match c {
                    '~' => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(invalid(
                                key,
                                format!("path {:?} has a '~' not followed by 0 or 1", short(path)),
                            ));
                        }
                    },
                    c => out.push(c),
                }
            }
            if out.len() > MAX_PATCH_STRING_BYTES {
                return Err(invalid(key, "a path segment is over 64 KiB"));
            }
            Ok(out)
        })
        .collect()
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), StoreError> {
        TwinPatch::from_json("t", v)?.validate("t", 1 << 20)
    }

    #[test]
    fn pointers_parse_and_unescape() {
        assert_eq!(parse_pointer("t", "").unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_pointer("t", "/a~1b/c~0d/0").unwrap(),
            vec!["a/b", "c~d", "0"]
        );
        assert!(parse_pointer("t", "a/b").is_err());
        assert!(parse_pointer("t", "/a~2").is_err());
        assert!(parse_pointer("t", &"/x".repeat(33)).is_err());
    }

    #[test]
    fn ops_and_merge_patches_are_told_apart() {
        let p =
            TwinPatch::from_json("t", json!({"ops": [{"op": "increment", "path": "/n"}]})).unwrap();
        assert_eq!(
            p,
            TwinPatch::Ops {
                ops: vec![PathOp::Increment {
                    path: "/n".into(),
                    by: 1
                }]
            }
        );
        let m = TwinPatch::from_json("t", json!({"ops": 3, "x": 1})).unwrap();
        assert!(matches!(m, TwinPatch::Merge(_)));
    }

    #[test]
    fn hostile_patches_are_refused_with_the_problem_named() {
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({ "d": deep });
        }
        let e = check(deep).unwrap_err().to_string();
        assert!(e.contains("nested deeper than 32"), "{e}");
        let e = check(json!({"s": "x".repeat(70_000)}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("over the limit of 65536"), "{e}");
        let e = check(json!([1, 2])).unwrap_err().to_string();
        assert!(e.contains("must be a JSON object"), "{e}");
        let e = check(json!({"ops": [{"op": "set", "path": "nope", "value": 1}]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a JSON pointer"), "{e}");
        let e = check(json!({"ops": [{"op": "frobnicate", "path": "/a"}]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad path operation list"), "{e}");
        let e = check(json!({"ops": []})).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = check(json!({"ops": [{"op": "delete", "path": ""}]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("root"), "{e}");
        let big = TwinPatch::Merge(json!({"s": "x".repeat(1000)}));
        assert_eq!(
            big.validate("t", 100).unwrap_err().code(),
            "value_too_large"
        );
    }
}
