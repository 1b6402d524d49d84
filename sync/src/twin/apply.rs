//! Applying a validated [`TwinPatch`] inside an automerge transaction. Walks paths through
//! the merged view of `json.rs` (so a field set after a concurrent creation lands where the
//! view shows it), creates missing parent maps, and turns any impossible step (a path through
//! a scalar, an index past a list's end, a missing value to delete) into an error naming the
//! path. The caller rolls the transaction back on error, so a refused patch changes nothing.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, Prop, ReadDoc, ScalarValue};
use serde_json::Value;

use super::json::{Node, child, element, json_scalar, scalar_json};
use super::patch::{escape, invalid, parse_pointer};
use super::{PathOp, TwinPatch};
use crate::StoreError;

/// Where the last segment of a path lives.
enum Parent {
    Maps(Vec<ObjId>),
    List(ObjId),
}

/// Applies `patch` to the document of twin `key` through transaction `tx`.
pub(crate) fn apply_patch<T: Transactable + ReadDoc>(
    tx: &mut T,
    key: &str,
    patch: &TwinPatch,
) -> Result<(), StoreError> {
    match patch {
        TwinPatch::Merge(Value::Object(m)) => merge(tx, key, "", &[automerge::ROOT], m),
        TwinPatch::Merge(_) => Err(invalid(key, "a merge patch must be a JSON object")),
        TwinPatch::Ops { ops } => ops.iter().try_for_each(|op| apply_op(tx, key, op)),
    }
}

fn am(key: &str, path: &str) -> impl Fn(automerge::AutomergeError) -> StoreError {
    let (key, path) = (key.to_owned(), path.to_owned());
    move |e| invalid(&key, format!("at {path:?}: {e}"))
}

/// RFC 7396 onto the view `view` (map objects, highest precedence first).
fn merge<T: Transactable + ReadDoc>(
    tx: &mut T,
    key: &str,
    at: &str,
    view: &[ObjId],
    patch: &serde_json::Map<String, Value>,
) -> Result<(), StoreError> {
    for (k, v) in patch {
        let path = format!("{at}/{}", escape(k));
        match v {
            Value::Null => remove_everywhere(tx, key, &path, view, k)?,
            Value::Object(inner) => match child(&*tx, view, k) {
                Node::Maps(sub) => merge(tx, key, &path, &sub, inner)?,
                _ => {
                    let id = tx
                        .put_object(&view[0], k.as_str(), ObjType::Map)
                        .map_err(am(key, &path))?;
                    remove_everywhere(tx, key, &path, &view[1..], k)?;
                    merge(tx, key, &path, &[id], inner)?;
                }
            },
            other => {
                // Writing an unchanged scalar would still be a change; skip it so repeated
                // identical reports do not grow the history.
                if let Node::Scalar(cur, _) = child(&*tx, view, k)
                    && other.is_number() == is_number(&cur)
                    && scalar_json(&cur) == *other
                    && tx.get_all(&view[0], k.as_str()).map_or(0, |a| a.len()) == 1
                    && view[1..]
                        .iter()
                        .all(|o| tx.get(o, k.as_str()).ok().flatten().is_none())
                {
                    continue;
                }
                put_json(tx, key, &path, &view[0], k.as_str().into(), other)?;
                remove_everywhere(tx, key, &path, &view[1..], k)?;
            }
        }
    }
    Ok(())
}

fn is_number(s: &ScalarValue) -> bool {
    matches!(
        s,
        ScalarValue::Int(_) | ScalarValue::Uint(_) | ScalarValue::F64(_)
    )
}

fn remove_everywhere<T: Transactable + ReadDoc>(
    tx: &mut T,
    key: &str,
    path: &str,
    view: &[ObjId],
    k: &str,
) -> Result<(), StoreError> {
    for o in view {
        if tx.get(o, k).map_err(am(key, path))?.is_some() {
            tx.delete(o, k).map_err(am(key, path))?;
        }
    }
    Ok(())
}

/// Writes a JSON value at `prop` of `obj` (objects and arrays become automerge maps/lists).
fn put_json<T: Transactable + ReadDoc>(
    tx: &mut T,
    key: &str,
    path: &str,
    obj: &ObjId,
    prop: Prop,
    v: &Value,
) -> Result<(), StoreError> {
    match v {
        Value::Object(m) => {
            let id = tx
                .put_object(obj, prop, ObjType::Map)
                .map_err(am(key, path))?;
            fill_map(tx, key, path, &id, m)
        }
        Value::Array(a) => {
            let id = tx
                .put_object(obj, prop, ObjType::List)
                .map_err(am(key, path))?;
            fill_list(tx, key, path, &id, a)
        }
        s => {
            let s = json_scalar(s).expect("a JSON scalar");
            tx.put(obj, prop, s).map_err(am(key, path))
        }
    }
}

fn insert_json<T: Transactable + ReadDoc>(
    tx: &mut T,
    key: &str,
    path: &str,
    list: &ObjId,
    idx: usize,
    v: &Value,
) -> Result<(), StoreError> {
    match v {
        Value::Object(m) => {
            let id = tx
                .insert_object(list, idx, ObjType::Map)
                .map_err(am(key, path))?;
            fill_map(tx, key, path, &id, m)
        }
        Value::Array(a) => {
            let id = tx
                .insert_object(list, idx, ObjType::List)
                .map_err(am(key, path))?;
            fill_list(tx, key, path, &id, a)
        }
        s => {
            let s = json_scalar(s).expect("a JSON scalar");
            tx.insert(list, idx, s).map_err(am(key, path))
        }
    }
}

fn fill_map<T: Transactable + ReadDoc>(
    tx: &mut T,
    key: &str,
    path: &str,
    id: &ObjId,
    m: &serde_json::Map<String, Value>,
) -> Result<(), StoreError> {
    for (k, x) in m {
        put_json(tx, key, path, id, k.as_str().into(), x)?;
    }
    Ok(())
}

fn fill_list<T: Transactable + ReadDoc>(
    tx: &mut T,
    key: &str,
    path: &str,
    id: &ObjId,
    a: &[Value],
) -> Result<(), StoreError> {
    for (i, x) in a.iter().enumerate() {
        insert_json(tx, key, path, id, i, x)?;
    }
    Ok(())
}

fn index(
    key: &str,
    path: &str,
    seg: &str,
    len: usize,
    allow_end: bool,
) -> Result<usize, StoreError> {
    if allow_end && seg == "-" {
        return Ok(len);
    }
    let i: usize = seg
        .parse()
        .ok()
        .filter(|_| !seg.starts_with('+') && (seg == "0" || !seg.starts_with('0')))
        .ok_or_else(|| invalid(key, format!("path {path:?}: {seg:?} is not a list index")))?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if i > max || (!allow_end && len == 0) {
        return Err(invalid(
            key,
            format!("path {path:?}: index {i} is past the end of a list of {len}"),
        ));
    }
    Ok(i)
}

/// Walks all but the last segment; creates missing maps when `create`.
fn walk<T: Transactable + ReadDoc>(
    tx: &mut T,
    key: &str,
    path: &str,
    segs: &[String],
    create: bool,
) -> Result<Parent, StoreError> {
    let mut at = Parent::Maps(vec![automerge::ROOT]);
    for (n, seg) in segs.iter().enumerate() {
        let next = match &at {
            Parent::Maps(view) => match child(&*tx, view, seg) {
                Node::Missing if create => {
                    let id = tx
                        .put_object(&view[0], seg.as_str(), ObjType::Map)
                        .map_err(am(key, path))?;
                    Node::Maps(vec![id])
                }
                other => other,
            },
            Parent::List(list) => {
                let i = index(key, path, seg, tx.length(list), false)?;
                element(&*tx, list, i)
            }
        };
        let here = || {
            let p: Vec<String> = segs[..=n].iter().map(|s| escape(s)).collect();
            format!("/{}", p.join("/"))
        };
        at = match next {
            Node::Maps(v) => Parent::Maps(v),
            Node::List(l) => Parent::List(l),
            Node::Missing => {
                return Err(invalid(
                    key,
                    format!("path {path:?}: {:?} does not exist", here()),
                ));
            }
            Node::Scalar(..) | Node::Text(_) => {
                return Err(invalid(
                    key,
                    format!("path {path:?}: {:?} is not an object or a list", here()),
                ));
            }
        };
    }
    Ok(at)
}

fn apply_op<T: Transactable + ReadDoc>(
    tx: &mut T,
    key: &str,
    op: &PathOp,
) -> Result<(), StoreError> {
    let path = op.path();
    let segs = parse_pointer(key, path)?;
    let Some((last, parents)) = segs.split_last() else {
        return Err(invalid(key, "an operation needs a non-empty path"));
    };
    match op {
        PathOp::Set { value, .. } => match walk(tx, key, path, parents, true)? {
            Parent::Maps(view) => {
                put_json(tx, key, path, &view[0], last.as_str().into(), value)?;
                remove_everywhere(tx, key, path, &view[1..], last)
            }
            Parent::List(list) => {
                let i = index(key, path, last, tx.length(&list), false)?;
                put_json(tx, key, path, &list, i.into(), value)
            }
        },
        PathOp::Delete { .. } => match walk(tx, key, path, parents, false)? {
            Parent::Maps(view) => {
                if matches!(child(&*tx, &view, last), Node::Missing) {
                    return Err(invalid(key, format!("path {path:?} does not exist")));
                }
                remove_everywhere(tx, key, path, &view, last)
            }
            Parent::List(list) => {
                let i = index(key, path, last, tx.length(&list), false)?;
                tx.delete(&list, i).map_err(am(key, path))
            }
        },
        PathOp::Increment { by, .. } => {
            let (holder, prop, cur): (ObjId, Prop, Node) = match walk(tx, key, path, parents, true)?
            {
                Parent::Maps(view) => {
                    let node = child(&*tx, &view, last);
                    let holder = match &node {
                        Node::Scalar(_, h) => h.clone(),
                        _ => view[0].clone(),
                    };
                    (holder, last.as_str().into(), node)
                }
                Parent::List(list) => {
                    let i = index(key, path, last, tx.length(&list), false)?;
                    (list.clone(), i.into(), element(&*tx, &list, i))
                }
            };
            match cur {
                Node::Scalar(ScalarValue::Counter(_), _) => {
                    tx.increment(&holder, prop, *by).map_err(am(key, path))
                }
                Node::Missing => tx
                    .put(&holder, prop, ScalarValue::counter(*by))
                    .map_err(am(key, path)),
                _ => Err(invalid(
                    key,
                    format!("path {path:?} holds a value that is not a counter"),
                )),
            }
        }
        PathOp::Insert { value, .. } => match walk(tx, key, path, parents, false)? {
            Parent::List(list) => {
                let i = index(key, path, last, tx.length(&list), true)?;
                insert_json(tx, key, path, &list, i, value)
            }
            Parent::Maps(_) => Err(invalid(
                key,
                format!("path {path:?}: insert needs a list as the parent"),
            )),
        },
    }
}
