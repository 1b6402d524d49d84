//! `GET /v1/openapi.json`: the OpenAPI 3.0 description of the API, written by hand. A test
//! checks it against [`routes`](super::routes::routes) in both directions, so a route cannot
//! be added or removed without updating this file.

use axum::response::Response;
use serde_json::{Value, json};

use super::ErrorCode;
use super::format::Format;

/// `GET /v1/openapi.json`.
pub async fn serve() -> Response {
    Format::Json.ok(&document())
}

fn param(name: &str, location: &str, required: bool, description: &str) -> Value {
    json!({
        "name": name,
        "in": location,
        "required": required,
        "description": description,
        "schema": { "type": "string" },
    })
}

fn query(name: &str, description: &str) -> Value {
    param(name, "query", false, description)
}

fn key_param() -> Value {
    param(
        "key",
        "path",
        true,
        "Document key (1–512 bytes, may contain `/`). Keys ending in /history, /diff or /siblings are reserved by these routes.",
    )
}

fn twin_key_param() -> Value {
    param(
        "key",
        "path",
        true,
        "Twin key (1–512 bytes, may contain `/`). Keys ending in /history or /diff are reserved by these routes.",
    )
}

const TIME: &str = "unix milliseconds, RFC 3339, `now` or `now-<duration>` (e.g. `now-1h`)";
const AS_OF: &str = "an HLC `<ms>:<logical>` or a time (unix milliseconds or RFC 3339)";

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// Responses: the success answer plus one answer per error status, listing its codes (from
/// [`ErrorCode`], so a code's status and meaning are written once).
fn responses(status: &str, success: Value, errors: &[ErrorCode]) -> Value {
    let mut r = serde_json::Map::new();
    r.insert(status.into(), success);
    let mut by_status: std::collections::BTreeMap<u16, Vec<String>> = Default::default();
    for code in errors {
        by_status
            .entry(code.status().as_u16())
            .or_default()
            .push(format!("`{}` ({})", code.as_str(), code.meaning()));
    }
    for (status, codes) in by_status {
        r.insert(
            status.to_string(),
            json!({
                "description": format!("Error; `error.code` is one of: {}", codes.join(", ")),
                "content": { "application/json": { "schema": schema_ref("Error") } },
            }),
        );
    }
    Value::Object(r)
}

fn op(summary: &str, params: Vec<Value>, resp: Value) -> Value {
    json!({ "summary": summary, "parameters": params, "responses": resp })
}

/// The whole document: the routes as written below, then the gate's answers (see
/// [`with_security`]).
pub fn document() -> Value {
    with_security(routes_document())
}

/// Adds the bearer security scheme and, to every operation, what the gate (`guard.rs`) may
/// answer before its handler: Host and throttle refusals everywhere it applies, credentials
/// and scope where the route needs a scope, Origin, body type and body timeout on writes.
fn with_security(mut doc: Value) -> Value {
    use super::route_scope::{Need, required_scope};
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let m = axum::http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .unwrap_or(axum::http::Method::GET);
            let need = required_scope(&m, path, false);
            let mut extra = Vec::new();
            if !matches!(path.as_str(), "/healthz" | "/readyz" | "/v1/sync") {
                extra.push(ErrorCode::HostNotAllowed);
            }
            match need {
                Need::Nothing => op["security"] = json!([]),
                Need::SyncCredentials => {
                    op["security"] = json!([{"bearer": []}]);
                    extra.push(ErrorCode::TooManyAuthFailures);
                    extra.push(ErrorCode::TooManySessions);
                }
                Need::Scope(scope) => {
                    op["x-kdelta-scope"] = json!(scope.as_str());
                    extra.extend([
                        ErrorCode::Unauthorized,
                        ErrorCode::Forbidden,
                        ErrorCode::TooManyAuthFailures,
                    ]);
                }
            }
            if m != axum::http::Method::GET {
                extra.extend([ErrorCode::ForeignOrigin, ErrorCode::UnsupportedMediaType]);
                // Any write may meet a full disk.
                extra.push(ErrorCode::DiskFull);
                extra.extend([ErrorCode::RequestTimeout, ErrorCode::BodyTooLarge]);
            }
            let Some(responses) = op["responses"].as_object_mut() else {
                continue;
            };
            for code in extra {
                let status = code.status().as_u16().to_string();
                let entry = format!("`{}` ({})", code.as_str(), code.meaning());
                match responses.get_mut(&status) {
                    Some(r) => {
                        let text = r["description"].as_str().unwrap_or_default().to_owned();
                        if !text.contains(&format!("`{}`", code.as_str())) {
                            r["description"] = json!(format!("{text}, {entry}"));
                        }
                    }
                    None => {
                        responses.insert(status, json!({
                            "description": format!("Error; `error.code` is one of: {entry}"),
                            "content": { "application/json": { "schema": schema_ref("Error") } },
                        }));
                    }
                }
            }
        }
    }
    doc["security"] = json!([{"bearer": []}]);
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from `[api] tokens` (scopes `read` < `write` < `admin`; each operation's `x-kdelta-scope` names what it needs). With no token configured, a loopback agent is open. A verified client certificate listed with `scopes` in `[[sync.accept_certs]]` counts as its principal (mutual TLS). `/v1/events` also takes `?access_token=`. See docs/security.md.",
        },
    });
    doc
}

/// The routes' own answers.
fn routes_document() -> Value {
    let batch_body = json!({
        "required": true,
        "content": {
            "application/json": { "schema": schema_ref("ReadingBatch") },
            "application/cbor": { "schema": schema_ref("ReadingBatch") },
        },
    });
    let doc_body = json!({
        "required": true,
        "description": "The new value: any JSON value (or CBOR with Content-Type application/cbor).",
        "content": { "application/json": { "schema": {} }, "application/cbor": { "schema": {} } },
    });
    let peer_schema = json!({"type": "object", "properties": {
                    "name": {"type": "string"}, "direction": {"type": "string", "enum": ["outbound", "inbound"]},
                    "url": {"type": "string", "nullable": true}, "connected": {"type": "boolean"},
                    "phase": {"type": "string", "enum": ["idle", "handshake", "catching_up", "live", "closed"]},
                    "last_sync_ms": {"type": "integer", "nullable": true},
                    "lag_to_peer": {"type": "integer"}, "lag_from_peer": {"type": "integer"},
                    "bytes_in": {"type": "integer"}, "bytes_out": {"type": "integer"},
                    "last_error": {"type": "object", "nullable": true},
                    "role": {"type": "string", "enum": ["device", "hub"], "nullable": true, "description": "inbound: the role of the credential"},
                    "bound_actor": {"type": "string", "nullable": true, "description": "inbound device credential: the actor it is bound to"},
                    "changes_refused": {"type": "integer", "description": "changes of other actors a device credential sent: refused"},
                    "changes_unverified": {"type": "integer", "description": "changes that failed the signature or chain check (bad_signature, broken_chain, unsigned with store.require_signatures): refused"},
                    "changes_unsigned": {"type": "integer", "description": "unsigned changes accepted (peers that do not sign yet)"},
                    "last_refusal": {"type": "object", "nullable": true, "description": "the latest refusal: code foreign_actor, bad_signature, broken_chain or unsigned, and a message naming actor and seq"}}});
    let credential_schema = json!({"type": "object", "properties": {
                    "name": {"type": "string"}, "kind": {"type": "string", "enum": ["token", "certificate"]},
                    "role": {"type": "string", "enum": ["device", "hub"]},
                    "bound_actor": {"type": "string", "nullable": true}}});
    // Built apart: one `json!` of every path would pass the macro's recursion limit.
    let gaps_path = json!({ "get": op("Gap records: readings dropped at their source under its disk budget's hard limit before an upstream peer had them (change kind 6; see docs/storage.md). On a hub, tells source drops from transit loss", vec![
                query("series", "Only entries naming this series"),
                query("after", "`next_after` of the previous page (default: the beginning)"),
                query("limit", "Most records (default 100, at most 1000)"),
            ], responses("200", ok("Gap records", gaps_schema()), &[ErrorCode::BadRequest, ErrorCode::InvalidQuery, ErrorCode::Unavailable])) });
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "kdelta agent API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Local HTTP API of the kdelta edge data agent: readings ingest and queries, versioned documents, live events, status and metrics. Responses are JSON, or CBOR with `Accept: application/cbor`. Errors are always JSON `{\"error\": {\"code\", \"message\"}}`.",
        },
        "paths": {
            "/healthz": { "get": op("Liveness: 200 while the process serves HTTP", vec![],
                responses("200", ok("Alive", json!({"type": "object"})), &[])) },
            "/readyz": { "get": op("Readiness: startup finished, the store writer answers within 2 s and its last commit succeeded (no disk write per probe); 503 `not_ready` with a message starting `disk_full:` while the disk is full", vec![],
                responses("200", ok("Ready", json!({"type": "object"})), &[ErrorCode::NotReady, ErrorCode::Unavailable])) },
            "/metrics": { "get": {
                "summary": "Prometheus metrics (OpenMetrics text)",
                "responses": { "200": { "description": "Metrics", "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } } },
            } },
            "/v1/status": { "get": op("Actor, version vector, counts, digest, disk use, RSS, uptime, version", vec![],
                responses("200", ok("Status", schema_ref("Status")), &[ErrorCode::Unavailable])) },
            "/v1/sources": { "get": op("Configured sources and their sampling status", vec![],
                responses("200", ok("Sources", json!({"type": "object", "properties": {"sources": {"type": "array", "items": schema_ref("SourceStatus")}}})), &[])) },
            "/v1/openapi.json": { "get": op("This document", vec![], responses("200", ok("OpenAPI 3.0 document", json!({"type": "object"})), &[])) },
            "/v1/series": { "get": op("Series with unit, metadata, count and time span, in name order, paged", vec![
                query("limit", "Most series per page (default 1000, at most 10000)"),
                query("after", "`next_after` of the previous page"),
            ], responses("200", ok("Series", json!({"type": "object", "properties": {
                "series": {"type": "array", "items": schema_ref("SeriesInfo")},
                "next_after": {"type": "string", "nullable": true}}})), &[ErrorCode::BadRequest, ErrorCode::Unavailable])) },
            "/v1/readings": {
                "post": {
                    "summary": "Ingest a batch of readings; answered once the batch is durable. One bad reading is one lost reading: a well-formed reading the store cannot hold (bad series name, non-finite value from CBOR, timestamp outside 1970..9999, unit over 32 bytes) is left out, named in `rejected` by its place (`readings[17]`, `series[2].values[5]`) and counted per reason under source `http` (`kdelta sources`, kdelta_source_rejected_readings_total); the rest is stored. With `atomic=true` any such reading refuses the whole request with 422 invalid_batch naming it, and nothing is stored. A batch whose every reading is refused, a body with wrong types or duplicate timestamps, or a batch that would encode to more than store.max_change_bytes (send smaller batches) is refused whole.",
                    "parameters": [query("atomic", "`true`: all or nothing — one reading the store cannot hold refuses the batch (default `false`)")],
                    "requestBody": batch_body,
                    "responses": responses("201", ok("Stored", schema_ref("Ack")), &[
                        ErrorCode::MalformedBody,
                        ErrorCode::BodyTooLarge,
                        ErrorCode::UnsupportedMediaType,
                        ErrorCode::InvalidBatch,
                        ErrorCode::Unavailable,
                    ]),
                },
                "get": op("Raw readings of one series in [from, to), paged", vec![
                    param("series", "query", true, "Series name"),
                    query("from", &format!("Inclusive start: {TIME}. Default: the beginning")),
                    query("to", &format!("Exclusive end: {TIME}. Default: the end")),
                    query("limit", "Most readings per page (default 1000, at most 100000)"),
                    query("cursor", "`next_cursor` of the previous page"),
                ], responses("200", ok("A page", schema_ref("ReadingPage")), &[ErrorCode::BadRequest, ErrorCode::BadTime, ErrorCode::InvalidQuery, ErrorCode::UnknownSeries, ErrorCode::Unavailable])),
            },
            "/v1/readings/aggregate": { "get": op("Aggregates per time bucket (aligned to the unix epoch); empty buckets are omitted", vec![
                param("series", "query", true, "Series name"),
                query("from", &format!("Inclusive start: {TIME}. Default: 60 buckets before `to`")),
                query("to", &format!("Exclusive end: {TIME}. Default: now")),
                query("bucket", "Bucket width: `10s`, `1m`, `1h` … or milliseconds (default 1m; at most 100000 buckets)"),
                query("fn", "Comma list of count, min, max, avg, sum, first, last (default all)"),
            ], responses("200", ok("Buckets", schema_ref("Aggregate")), &[ErrorCode::BadRequest, ErrorCode::BadTime, ErrorCode::InvalidQuery, ErrorCode::UnknownSeries, ErrorCode::Unavailable])) },
            "/v1/readings/latest": { "get": op("Latest reading of each series", vec![
                query("series", "Comma list of series (default every series)"),
            ], responses("200", ok("Latest readings", json!({"type": "object", "properties": {"latest": {"type": "array", "items": schema_ref("LatestReading")}}})), &[ErrorCode::UnknownSeries, ErrorCode::Unavailable])) },
            "/v1/readings/timing": { "get": op("Readings batches sampled while their device's clock was not trusted: original time span, and the correction once the device knew a trusted time (see docs/clock.md)", vec![
                query("series", "Only batches holding this series (counts and spans are then that series')"),
                query("after", "`next_after` of the previous page (default: the beginning)"),
                query("limit", "Most records (default 1000, at most 10000)"),
            ], responses("200", ok("Timing records", json!({"type": "object", "properties": {
                "timing": {"type": "array", "items": {"type": "object", "properties": {
                    "position": {"type": "integer"}, "actor": {"type": "string"}, "seq": {"type": "integer"},
                    "boot_id": {"type": "string"}, "offset_ms": {"type": "integer", "description": "wall clock minus the boot's monotonic clock when sampled"},
                    "count": {"type": "integer"}, "original_from": {"type": "integer"}, "original_to": {"type": "integer"},
                    "state": {"type": "string", "enum": ["uncorrected", "corrected"]},
                    "delta_ms": {"type": "integer", "nullable": true}, "corrected_by": {"type": "integer", "nullable": true, "description": "seq of the correcting change (same actor)"},
                    "corrected_from": {"type": "integer", "nullable": true}, "corrected_to": {"type": "integer", "nullable": true}}}},
                "next_after": {"type": "integer", "nullable": true}}})), &[ErrorCode::BadRequest, ErrorCode::InvalidQuery, ErrorCode::Unavailable])) },
            "/v1/docs": {
                "post": {
                    "summary": "Write many documents as ONE atomic change (one seq, one HLC); answered once durable. A refused batch stores nothing; the error message starts `entry <index>:` when one entry is at fault.",
                    "requestBody": {
                        "required": true,
                        "content": {
                            "application/json": { "schema": schema_ref("DocBatch") },
                            "application/cbor": { "schema": schema_ref("DocBatch") },
                        },
                    },
                    "responses": responses("200", ok("The new versions, in entry order", json!({"type": "object", "properties": {
                        "actor": {"type": "string"}, "seq": {"type": "integer"}, "hlc": {"type": "string"},
                        "versions": {"type": "array", "items": schema_ref("DocVersion")}}})), &[
                        ErrorCode::MalformedBody,
                        ErrorCode::BodyTooLarge, ErrorCode::ValueTooLarge,
                        ErrorCode::UnsupportedMediaType,
                        ErrorCode::InvalidKey, ErrorCode::InvalidBatch,
                        ErrorCode::NotFound, ErrorCode::WrongKind,
                        ErrorCode::Unavailable,
                    ]),
                },
                "get": op("Live documents by key prefix, in key order", vec![
                query("prefix", "Key prefix (default all)"),
                query("as_of", &format!("List as of {AS_OF}")),
                query("limit", "Most documents (default 100, at most 1000)"),
                query("after", "`next_after` of the previous page"),
            ], responses("200", ok("Documents", json!({"type": "object", "properties": {
                "docs": {"type": "array", "items": schema_ref("DocState")},
                "next_after": {"type": "string", "nullable": true}}})), &[ErrorCode::BadRequest, ErrorCode::BadTime, ErrorCode::InvalidQuery, ErrorCode::HistoryPruned, ErrorCode::Unavailable])) },
            "/v1/docs/{key}": {
                "get": op("A document's value (the deterministic winner among siblings)", vec![
                    key_param(),
                    query("as_of", &format!("Read the value as of {AS_OF}")),
                ], responses("200", ok("The document", schema_ref("DocState")), &[
                    ErrorCode::BadTime,
                    ErrorCode::NotFound, ErrorCode::BeforeHistory,
                    ErrorCode::HistoryPruned,
                    ErrorCode::Unavailable,
                ])),
                "put": {
                    "summary": "Write a new version; answered once durable",
                    "parameters": [key_param()],
                    "requestBody": doc_body,
                    "responses": responses("200", ok("The new version", schema_ref("DocVersion")), &[
                        ErrorCode::MalformedBody,
                        ErrorCode::BodyTooLarge, ErrorCode::ValueTooLarge,
                        ErrorCode::UnsupportedMediaType,
                        ErrorCode::InvalidKey,
                        ErrorCode::Unavailable,
                    ]),
                },
                "delete": op("Delete (write a tombstone version; history is kept)", vec![key_param()],
                    responses("200", ok("The tombstone version", schema_ref("DocVersion")), &[ErrorCode::NotFound, ErrorCode::InvalidKey, ErrorCode::Unavailable])),
            },
            "/v1/docs/{key}/history": { "get": op("Versions of a document, newest first", vec![
                key_param(),
                query("limit", "Most versions (default 100, at most 1000)"),
                query("before", &format!("Only versions after the previous page: its `next_before` (`<ms>:<logical>~<actor>`), or only versions before {AS_OF}")),
            ], responses("200", ok("History", json!({"type": "object", "properties": {
                "key": {"type": "string"},
                "versions": {"type": "array", "items": schema_ref("DocVersion")},
                "next_before": {"type": "string", "nullable": true}}})), &[ErrorCode::BadTime, ErrorCode::BadRequest, ErrorCode::NotFound, ErrorCode::Unavailable])) },
            "/v1/docs/{key}/diff": { "get": op("How a document changed between two points", vec![
                key_param(),
                param("from", "query", true, &format!("First point: {AS_OF}")),
                query("to", &format!("Second point: {AS_OF} (default: now)")),
            ], responses("200", ok("Diff", schema_ref("DocDiff")), &[ErrorCode::BadTime, ErrorCode::BadRequest, ErrorCode::NotFound, ErrorCode::HistoryPruned, ErrorCode::Unavailable])) },
            "/v1/docs/{key}/siblings": { "get": op("Concurrent versions of a document (conflicts), newest first", vec![key_param()],
                responses("200", ok("Siblings", json!({"type": "object", "properties": {
                    "key": {"type": "string"},
                    "siblings": {"type": "array", "items": schema_ref("DocVersion")}}})), &[ErrorCode::NotFound, ErrorCode::Unavailable])) },
            "/v1/twins": { "get": op("Twin (merge document) keys by prefix, in key order", vec![
                query("prefix", "Key prefix (default all)"),
                query("limit", "Most keys (default 100, at most 1000)"),
                query("after", "`next_after` of the previous page"),
            ], responses("200", ok("Twin keys", json!({"type": "object", "properties": {
                "twins": {"type": "array", "items": {"type": "string"}},
                "next_after": {"type": "string", "nullable": true}}})), &[ErrorCode::BadRequest, ErrorCode::BadTime, ErrorCode::InvalidQuery, ErrorCode::Unavailable])) },
            "/v1/twins/{key}": {
                "get": op("A twin's merged JSON value", vec![
                    twin_key_param(),
                    query("as_of", &format!("Read the value as of {AS_OF}")),
                ], responses("200", ok("The twin", schema_ref("TwinState")), &[
                    ErrorCode::BadTime,
                    ErrorCode::NotFound, ErrorCode::BeforeHistory,
                    ErrorCode::Unavailable,
                ])),
                "post": {
                    "summary": "Create a twin, empty or with an initial JSON object; answered once durable",
                    "parameters": [twin_key_param()],
                    "requestBody": { "required": false, "content": { "application/json": { "schema": {"type": "object"} } } },
                    "responses": responses("201", ok("The new twin", schema_ref("TwinWrite")), &[
                        ErrorCode::MalformedBody,
                        ErrorCode::TwinExists, ErrorCode::WrongKind,
                        ErrorCode::BodyTooLarge, ErrorCode::ValueTooLarge,
                        ErrorCode::InvalidKey, ErrorCode::InvalidPatch,
                        ErrorCode::Unavailable,
                    ]),
                },
                "patch": {
                    "summary": "Apply a JSON Merge Patch (Content-Type application/merge-patch+json) or path operations (application/json `{\"ops\": [{\"op\": \"set|delete|increment|insert\", \"path\": \"/json/pointer\", \"value\", \"by\"}]}`) as one change; a refused patch changes nothing",
                    "parameters": [twin_key_param()],
                    "requestBody": { "required": true, "content": {
                        "application/merge-patch+json": { "schema": {"type": "object"} },
                        "application/json": { "schema": {"type": "object", "properties": {"ops": {"type": "array", "items": {"type": "object"}}}} },
                    } },
                    "responses": responses("200", ok("The twin after the patch", schema_ref("TwinWrite")), &[
                        ErrorCode::MalformedBody,
                        ErrorCode::NotFound,
                        ErrorCode::WrongKind,
                        ErrorCode::BodyTooLarge, ErrorCode::ValueTooLarge,
                        ErrorCode::UnsupportedMediaType,
                        ErrorCode::InvalidKey, ErrorCode::InvalidPatch,
                        ErrorCode::Unavailable,
                    ]),
                },
            },
            "/v1/twins/{key}/history": { "get": op("Changes of a twin, newest first: who changed which paths, when", vec![
                twin_key_param(),
                query("limit", "Most changes (default 100, at most 1000)"),
                query("before", &format!("Only changes after the previous page: its `next_before` (`<ms>:<logical>~<actor>`), or only changes before {AS_OF}")),
            ], responses("200", ok("History", json!({"type": "object", "properties": {
                "key": {"type": "string"},
                "changes": {"type": "array", "items": schema_ref("TwinChangeInfo")},
                "next_before": {"type": "string", "nullable": true}}})), &[ErrorCode::BadTime, ErrorCode::BadRequest, ErrorCode::NotFound, ErrorCode::Unavailable])) },
            "/v1/twins/{key}/diff": { "get": op("How a twin changed between two points", vec![
                twin_key_param(),
                param("from", "query", true, &format!("First point: {AS_OF}")),
                query("to", &format!("Second point: {AS_OF} (default: now)")),
            ], responses("200", ok("Diff", schema_ref("DocDiff")), &[ErrorCode::BadTime, ErrorCode::BadRequest, ErrorCode::NotFound, ErrorCode::HistoryPruned, ErrorCode::Unavailable])) },
            "/v1/events": { "get": {
                "summary": "Server-sent events: `event: change` (data: ChangeEvent JSON) for every durable change passing the filter; `event: lagged` (data `{\"missed\": n}`) when this client fell behind",
                "parameters": [
                    query("kind", "`readings` or `doc`"),
                    query("series", "Comma list: reading batches holding one of these series"),
                    query("prefix", "Documents whose key, or reading batches with a series whose name, starts with this"),
                ],
                "responses": responses("200", json!({
                    "description": "Event stream",
                    "content": { "text/event-stream": { "schema": schema_ref("ChangeEvent") } },
                }), &[ErrorCode::BadRequest]),
            } },
            "/v1/sync": { "get": {
                "summary": "Sync with another agent: a WebSocket upgrade carrying the kdelta sync protocol (CBOR frames in binary messages). The peer authenticates with a verified client certificate listed in `[[sync.accept_certs]]` (mutual TLS) or with `Authorization: Bearer` and a token from `[sync] accept_tokens` (checked again in its Hello frame).",
                "responses": responses("101", json!({ "description": "Switching to the WebSocket sync protocol" }),
                    &[ErrorCode::WebsocketRequired, ErrorCode::Unauthorized, ErrorCode::SyncDisabled]),
            } },
            "/v1/sync/now": { "post": op("Wake every outbound sync peer (or `peer`) out of its reconnect backoff, then wait until each is connected and caught up both ways with what this agent held at the request, or has failed, or `timeout` passes",
                vec![query("peer", "Only this outbound peer (its configured name)"), query("timeout", "How long to wait, e.g. `30s` (default 30s, at most 10m)")],
                responses("200", ok("Per-peer results; `ok` is true when every peer synced", sync_now_schema()),
                    &[ErrorCode::BadRequest, ErrorCode::UnknownPeer, ErrorCode::Unavailable])) },
            "/v1/backup": { "get": op("A backup of the store, streamed while it is packed: a consistent online snapshot (ingest keeps running), zstd-compressed, after a header with the actor, version vector and digest (`kdelta backup FILE` saves and verifies it; `kdelta restore FILE` restores it). One backup at a time; the agent needs room for one uncompressed copy of the store in its data directory meanwhile", vec![],
                responses("200", json!({"description": "The backup file (`application/vnd.kdelta.backup`; `Content-Disposition` suggests a file name)",
                    "content": {"application/vnd.kdelta.backup": {"schema": {"type": "string", "format": "binary"}}}}),
                    &[ErrorCode::Unavailable, ErrorCode::Internal])) },
            "/v1/sync/peers": { "get": op("Sync peers (configured outbound and connected inbound): connection, phase, last success, lag in changes per direction, bytes in/out, last error, role and refusals; and every accepted credential with its role and bound actor", vec![],
                responses("200", ok("Peers", json!({"type": "object", "properties": {"peers": {"type": "array", "items": peer_schema}, "credentials": {"type": "array", "items": credential_schema}}})), &[ErrorCode::Unavailable])) },
        },
        "components": { "schemas": schemas() },
    });
    doc["paths"]["/v1/readings/gaps"] = gaps_path;
    doc
}

/// `GET /v1/readings/gaps`'s answer.
fn gaps_schema() -> Value {
    let i = json!({"type": "integer"});
    let entry = json!({"type": "object", "properties": {
        "series": {"type": "string"}, "actor": {"type": "string", "description": "whose readings changes held them"},
        "first_seq": i, "last_seq": i, "from_ms": i, "to_ms": i, "readings": i}});
    let gap = json!({"type": "object", "properties": {
        "local_id": i, "actor": {"type": "string", "description": "the store that dropped the readings"},
        "seq": i, "hlc": {"type": "string"},
        "reason": {"type": "string", "enum": ["disk_budget"]},
        "entries": {"type": "array", "items": entry}}});
    json!({"type": "object", "properties": {
        "gaps": {"type": "array", "items": gap},
        "readings": {"type": "integer", "description": "readings dropped, over the records of this page"},
        "next_after": {"type": "integer", "nullable": true}}})
}

fn sync_now_schema() -> Value {
    let result = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "url": {"type": "string", "nullable": true},
        "result": {"type": "string", "enum": ["synced", "failed", "timeout"]},
        "elapsed_ms": {"type": "integer"}, "lag_to_peer": {"type": "integer"}, "lag_from_peer": {"type": "integer"},
        "error": {"type": "object", "nullable": true, "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "at_ms": {"type": "integer"}}}}});
    json!({"type": "object", "properties": {"ok": {"type": "boolean"}, "peers": {"type": "array", "items": result}}})
}

/// `Status.store`: write health (and, with retention, the store's space figures).
fn store_status_schema() -> Value {
    let opt_i = json!({"type": "integer", "nullable": true});
    let opt_s = json!({"type": "string", "nullable": true});
    let write_health = json!({"type": "object",
        "description": "Whether writes work, as the store's writer last found it; `disk_full` is set (SQLite's message) while the disk is full",
        "properties": {
            "since_last_commit_ms": opt_i, "disk_full": opt_s,
            "disk_full_for_ms": opt_i, "last_failure": opt_s,
            "reserve": {"type": "object", "nullable": true,
                "description": "The disk reserve file ([retention] reserve; docs/storage.md): `state` is `held`, `released` (given up to a full disk, held again before writes resume), `no_room`, `failed` or `disabled`; `why` says why it is not held",
                "properties": {"path": {"type": "string"}, "bytes": {"type": "integer"},
                    "state": {"type": "string", "enum": ["held", "released", "no_room", "failed", "disabled"]},
                    "why": opt_s}}}});
    let retention = json!({"type": "object",
        "description": "The last retention pass: `enabled`, `at_ms`, `pruned` and `total` (`readings`, `units`, `rollups`, `doc_versions`, `steps`, `held`, `dropped_unacked`, `gaps`, `twin_changes_compacted`, `twin_bytes_compacted`, `twin_changes_kept`, `changes_compacted`), `took_ms`, `error`",
        "additionalProperties": true});
    let budget = json!({"type": "object", "nullable": true,
        "description": "The disk budget (`[retention] max_disk` / `min_free`; null without one): `used_bytes` (database + WAL + shm less free pages), `limit_bytes` (max_disk), `hard_limit_bytes`, `fraction` (used / limit), `min_free_bytes`, `room_bytes` (available + free pages), `holding_unacked` (over budget, keeping readings upstream has not acknowledged), `pruned_total`, `dropped_unacked_total`, `gaps_total`, `rollups_pruned_total` (rollup rows pruned once no raw reading was left to prune), `changes_compacted_total` (change rows compacted into log runs by its passes), `cannot_meet` (null, or set while the store is over budget and the budget may prune nothing more: `since_ms`, `over_bytes`, `held_by` — what holds the database's pages, largest first, as `holder` (`change_log`, `documents`, `twins`, `readings`, `rollups`, `other`) and `bytes` — and `measured_ms`) and the `last` pass (`limits`, `before`, `after`, `pruned`, `rollups`, `hard`, `holding_unacked`, `cannot_meet`, `error`)",
        "additionalProperties": true});
    let horizon = json!({"type": "object",
        "description": "Oldest raw reading kept: over all series (`oldest_reading_ms`) and per series (`series`: name → unix ms, null when only rollups remain; at most 1000, `truncated` says when more exist)",
        "additionalProperties": true});
    let wear = json!({"type": "object",
        "description": "Storage writes of this process (`write_bytes` from /proc/self/io since start, `write_bytes_per_day` scaled from the uptime, null during the first 10 minutes) and the WAL's size (`wal_bytes`)",
        "properties": {"write_bytes": opt_i, "write_bytes_per_day": opt_i, "wal_bytes": opt_i}});
    json!({"type": "object", "properties": {"write_health": write_health, "retention": retention, "budget": budget, "horizon": horizon, "wear": wear}})
}

fn schemas() -> Value {
    let s = json!({"type": "string"});
    let n = json!({"type": "number"});
    let i = json!({"type": "integer"});
    let hlc = json!({"type": "string", "description": "HLC `<unix ms>:<logical>`", "example": "1764000000000:0"});
    let actor = json!({"type": "string", "description": "Actor id, 32 hex digits"});
    let time = json!({"oneOf": [{"type": "integer", "description": "unix ms"}, {"type": "string", "description": "RFC 3339"}]});
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let table: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|c| format!("`{}` {}: {}", c.status().as_u16(), c.as_str(), c.meaning()))
        .collect();
    let code = json!({"type": "string", "enum": codes, "description": format!("Stable error code; with its HTTP status: {}", table.join("; "))});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": code, "message": s}}}},
        "ReadingBatch": {"oneOf": [
            {"type": "array", "description": "Row form", "items": {"type": "object", "required": ["series", "value"], "properties": {
                "series": s, "ts": time, "value": n, "unit": s}}},
            {"type": "object", "description": "Columnar form", "required": ["series"], "properties": {"series": {"type": "array", "items": {
                "type": "object", "required": ["name", "ts", "values"], "properties": {
                    "name": s, "unit": s, "meta": {"type": "object", "additionalProperties": s},
                    "ts": {"type": "array", "items": time}, "values": {"type": "array", "items": n}}}}}},
        ]},
        "Ack": {"type": "object", "properties": {"actor": actor, "seq": i, "hlc": hlc, "count": i,
            "rejected_count": {"type": "integer", "description": "readings left out (only when some were)"},
            "rejected": {"type": "array", "description": "the first 100 readings left out", "items": {"type": "object", "properties": {
                "at": s, "series": s, "reason": {"type": "string", "enum": ["bad_series_name", "not_finite", "bad_timestamp", "unit_too_long"]}, "message": s}}}}},
        "SeriesInfo": {"type": "object", "properties": {"name": s, "unit": {"type": "string", "nullable": true},
            "meta": {"type": "object", "additionalProperties": s}, "count": i,
            "first_ts": {"type": "integer", "nullable": true}, "last_ts": {"type": "integer", "nullable": true}}},
        "ReadingPage": {"type": "object", "properties": {"series": s, "unit": {"type": "string", "nullable": true},
            "readings": {"type": "array", "items": {"type": "object", "properties": {"ts": i, "value": n}}},
            "next_cursor": {"type": "string", "nullable": true}}},
        "Aggregate": {"type": "object", "properties": {"series": s, "from": i, "to": i, "bucket_ms": i, "fn": {"type": "array", "items": s},
            "buckets": {"type": "array", "items": {"type": "object", "properties": {
                "start": i, "count": i, "min": n, "max": n, "avg": n, "sum": n, "first": n, "last": n}}}}},
        "LatestReading": {"type": "object", "properties": {"series": s, "unit": {"type": "string", "nullable": true}, "ts": i, "value": n}},
        "DocState": {"type": "object", "properties": {"key": s, "value": {}, "actor": actor, "seq": i, "hlc": hlc, "siblings": i}},
        "DocBatch": {"type": "array", "description": "At most `[store] max_batch_docs` entries (default 1000), each key once.", "items": {"type": "object", "required": ["key"], "properties": {
            "key": {"type": "string"},
            "value": {"description": "The new value (any JSON value, null included); give this or `delete`", "nullable": true},
            "delete": {"type": "boolean", "description": "true: write a tombstone (the key must have a live value)"},
            "context": {"type": "array", "description": "The versions this write resolves, as read from …/siblings (default: every current sibling)",
                "items": {"type": "object", "required": ["actor", "seq"], "properties": {"actor": {"type": "string"}, "seq": {"type": "integer"}}}}}}},
                "DocVersion": {"type": "object", "properties": {"key": s, "actor": actor, "seq": i, "hlc": hlc, "value": {"nullable": true},
            "deleted": {"type": "boolean"},
            "pruned": {"type": "boolean", "description": "Document retention dropped this version's value (`value` is null; not a delete)"},
            "supersedes": {"type": "array", "items": {"type": "object", "properties": {"actor": actor, "seq": i}}}}},
        "DocDiff": {"type": "object", "properties": {"key": s, "from": {"nullable": true}, "to": {"nullable": true},
            "changes": {"type": "array", "items": {"type": "object", "properties": {
                "path": {"type": "string", "description": "JSON pointer"}, "op": {"type": "string", "enum": ["added", "removed", "changed"]},
                "from": {}, "to": {}}}}}},
        "TwinState": {"type": "object", "properties": {"key": s, "value": {"type": "object"}, "changes": i}},
        "TwinWrite": {"type": "object", "properties": {"key": s, "value": {"type": "object"}, "changed": {"type": "boolean"},
            "actor": {"type": "string", "nullable": true}, "seq": {"type": "integer", "nullable": true}, "hlc": {"type": "string", "nullable": true}}},
        "TwinChangeInfo": {"type": "object", "properties": {"actor": actor, "seq": i, "hlc": hlc,
            "paths": {"type": "array", "items": {"type": "string", "description": "JSON pointer"}}, "truncated": {"type": "boolean"}}},
        "ChangeEvent": {"type": "object", "properties": {"local_id": i, "actor": actor, "seq": i, "hlc": hlc, "remote": {"type": "boolean"},
            "kind": {"type": "string", "enum": ["readings", "doc", "twin", "time_correction"]}, "series": {"type": "array", "items": s}, "count": i,
            "key": s, "deleted": {"type": "boolean"}}},
        "SourceStatus": {"type": "object", "properties": {"name": s, "kind": s, "interval_ms": i,
            "last_reading_ms": {"type": "integer", "nullable": true}, "readings": i,
            "last_error": {"type": "string", "nullable": true}, "errors": i, "missed_ticks": i,
            "rejected": {"type": "object", "additionalProperties": i,
                "description": "Readings refused one by one before their batch (the rest was stored), by reason: bad_series_name, not_finite, bad_timestamp, unit_too_long; MQTT ingest's row (`mqtt`) also malformed and not_a_number"}}},
        "Status": {"type": "object", "properties": {
            "version": s, "actor": actor, "ready": {"type": "boolean"}, "uptime_s": i,
            "version_vector": {"type": "object", "additionalProperties": i}, "digest": s,
            "counts": {"type": "object", "properties": {"changes": i, "readings": i, "series": i, "doc_keys": i, "doc_versions": i}},
            "db_bytes": i, "data_dir": s,
            "store": store_status_schema(),
            "disk": {"type": "object", "nullable": true, "properties": {"total_bytes": i, "free_bytes": i, "available_bytes": i, "used_percent": n}},
            "rss_bytes": {"type": "integer", "nullable": true}}},
    })
}
