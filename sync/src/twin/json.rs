//! The merged JSON view of a twin, and the node lookup `apply.rs` shares with it.
//!
//! Automerge keeps every concurrent value of a map key and names one winner. When both sides
//! of a partition created a map at the same key (the hub made `desired` while the device did
//! too), showing only the winner would hide the other side's fields. So a key whose winning
//! value is a map shows the union of all its concurrent map values, the winner's fields first
//! (recursively): a "view" is that ordered list of map objects. Any other winning value
//! (scalar, list, text) is shown alone. Every replica orders conflicts the same way, so the
//! view is deterministic.

use automerge::{ObjType, ReadDoc, ScalarValue, Value as AmValue};
use serde_json::{Map, Number, Value};

use super::MAX_VIEW_DEPTH;

/// What a key or list element holds, as the view sees it.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// Nothing.
    Missing,
    /// Map objects, highest precedence first (more than one after concurrent creation).
    Maps(Vec<automerge::ObjId>),
    /// A list object.
    List(automerge::ObjId),
    /// A text object.
    Text(automerge::ObjId),
    /// A scalar, and the map object holding it (for increments).
    Scalar(ScalarValue, automerge::ObjId),
}

/// All concurrent values of `key` across the maps of `view`, winner of each map first,
/// maps in view order.
fn candidates<D: ReadDoc>(
    d: &D,
    view: &[automerge::ObjId],
    key: &str,
) -> Vec<(AmValue<'static>, automerge::ObjId, automerge::ObjId)> {
    let mut out = Vec::new();
    for obj in view {
        let Ok(mut all) = d.get_all(obj, key) else {
            continue;
        };
        let winner = d.get(obj, key).ok().flatten().map(|(_, id)| id);
        // Winner first, then the others newest first.
        all.reverse();
        if let Some(w) = winner
            && let Some(i) = all.iter().position(|(_, id)| *id == w)
        {
            let x = all.remove(i);
            all.insert(0, x);
        }
        out.extend(
            all.into_iter()
                .map(|(v, id)| (v.into_owned(), id, obj.clone())),
        );
    }
    out
}

/// What `key` holds in the view of map objects `view`.
pub(crate) fn child<D: ReadDoc>(d: &D, view: &[automerge::ObjId], key: &str) -> Node {
    let c = candidates(d, view, key);
    let Some((top, top_id, holder)) = c.first().cloned() else {
        return Node::Missing;
    };
    match top {
        AmValue::Object(ObjType::Map | ObjType::Table) => Node::Maps(
            c.into_iter()
                .filter(|(v, _, _)| matches!(v, AmValue::Object(ObjType::Map | ObjType::Table)))
                .map(|(_, id, _)| id)
                .collect(),
        ),
        AmValue::Object(ObjType::List) => Node::List(top_id),
        AmValue::Object(ObjType::Text) => Node::Text(top_id),
        AmValue::Scalar(s) => Node::Scalar(s.into_owned(), holder),
    }
}

/// What element `idx` of `list` holds.
pub(crate) fn element<D: ReadDoc>(d: &D, list: &automerge::ObjId, idx: usize) -> Node {
    match d.get(list, idx) {
        Ok(Some((AmValue::Object(ObjType::Map | ObjType::Table), id))) => Node::Maps(vec![id]),
        Ok(Some((AmValue::Object(ObjType::List), id))) => Node::List(id),
        Ok(Some((AmValue::Object(ObjType::Text), id))) => Node::Text(id),
        Ok(Some((AmValue::Scalar(s), _))) => Node::Scalar(s.into_owned(), list.clone()),
        _ => Node::Missing,
    }
}

/// The merged JSON value of the whole document (always an object).
pub(crate) fn to_json<D: ReadDoc>(d: &D) -> Value {
    node_json(d, Node::Maps(vec![automerge::ROOT]), 0)
}

fn node_json<D: ReadDoc>(d: &D, node: Node, depth: usize) -> Value {
    if depth > MAX_VIEW_DEPTH {
        return Value::Null;
    }
    match node {
        Node::Missing => Value::Null,
        Node::Scalar(s, _) => scalar_json(&s),
        Node::Text(id) => Value::String(d.text(&id).unwrap_or_default()),
        Node::List(id) => Value::Array(
            (0..d.length(&id))
                .map(|i| node_json(d, element(d, &id, i), depth + 1))
                .collect(),
        ),
        Node::Maps(view) => {
            let mut keys: Vec<String> = view.iter().flat_map(|o| d.keys(o)).collect();
            keys.sort();
            keys.dedup();
            let mut out = Map::new();
            for k in keys {
                match child(d, &view, &k) {
                    Node::Missing => {}
                    n => {
                        out.insert(k, node_json(d, n, depth + 1));
                    }
                }
            }
            Value::Object(out)
        }
    }
}

/// JSON of an automerge scalar. Counters and timestamps are numbers, bytes a hex string,
/// values of unknown future types `null`.
pub(crate) fn scalar_json(s: &ScalarValue) -> Value {
    match s {
        ScalarValue::Str(s) => Value::String(s.to_string()),
        ScalarValue::Int(i) => Value::from(*i),
        ScalarValue::Uint(u) => Value::from(*u),
        ScalarValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        ScalarValue::Counter(c) => Value::from(i64::from(c)),
        ScalarValue::Timestamp(t) => Value::from(*t),
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Bytes(b) => Value::String(hex::encode(b)),
        ScalarValue::Null | ScalarValue::Unknown { .. } => Value::Null,
    }
}

/// The automerge scalar for a JSON scalar (`None` for objects and arrays).
pub(crate) fn json_scalar(v: &Value) -> Option<ScalarValue> {
    Some(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::Array(_) | Value::Object(_) => return None,
    })
}
