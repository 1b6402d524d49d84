"""The blocking and async clients against a real agent process."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

import kdelta
from agent import Agent


def test_readings_ingest_range_aggregate_latest(client: kdelta.Client, prefix: str) -> None:
    s = prefix.replace("/", ".") + "temp"
    base = 1_764_000_000_000
    rows = [{"series": s, "ts": base + i * 1000, "value": float(i), "unit": "°C"} for i in range(250)]
    written = client.readings.ingest(rows, batch_size=100)
    assert [w.count for w in written] == [100, 100, 50]
    assert all(w.actor == written[0].actor for w in written)
    r = client.readings.range(s, start=base, end=base + 250_000, page_size=60)
    assert [x.value for x in r] == [float(i) for i in range(250)] and r.unit == "°C"
    assert client.readings.range(s, limit=7)[-1].ts == base + 6000
    agg = client.readings.aggregate(s, start=base, end=base + 120_000, bucket="1m", functions=["count", "max"])
    assert [(b.count, b.max) for b in agg] == [(60, 59.0), (60, 119.0)] and agg[0].avg is None
    (latest,) = client.readings.latest([s])
    assert latest.value == 249.0 and latest.time == dt.datetime.fromtimestamp((base + 249_000) / 1000, dt.timezone.utc)
    assert any(x.name == s and x.count == 250 for x in client.readings.series())
    df = agg.to_pandas()
    assert list(df["max"]) == [59.0, 119.0]
    assert client.readings.range(s, start=base, end=base + 3000).to_pandas().tolist() == [0.0, 1.0, 2.0]


def test_readings_accept_tuples_and_datetimes(client: kdelta.Client, prefix: str) -> None:
    s = prefix.replace("/", ".") + "rh"
    t = dt.datetime(2025, 11, 24, 16, 0, tzinfo=dt.timezone.utc)
    client.readings.ingest([(s, 50), (s, 51, t)])
    got = client.readings.range(s, start=t, end=t + dt.timedelta(seconds=1))
    assert [(x.time, x.value) for x in got] == [(t, 51.0)]
    assert len(client.readings.range(s, start=dt.timedelta(minutes=-5))) == 1


def test_bad_batch_raises_typed_error_and_stores_nothing(client: kdelta.Client, prefix: str) -> None:
    s = prefix.replace("/", ".") + "bad"
    with pytest.raises(kdelta.InvalidInput) as e:
        client.readings.ingest([{"series": s, "value": "NaN"}])
    assert e.value.code == "invalid_batch" and e.value.status == 422
    with pytest.raises(kdelta.NotFound) as nf:
        client.readings.range(s)
    assert nf.value.code == "unknown_series"
    with pytest.raises(kdelta.BadRequest) as bt:
        client.readings.range(s, start="last tuesday")
    assert bt.value.code == "bad_time"


def test_one_bad_reading_is_left_out_unless_atomic(client: kdelta.Client, prefix: str) -> None:
    s = prefix.replace("/", ".") + "mixed"
    rows = [{"series": s, "ts": 1000, "value": 1.0}, {"series": s, "ts": -5, "value": 2.0},
            {"series": s, "ts": 3000, "value": 3.0}]
    with pytest.raises(kdelta.InvalidInput) as e:
        client.readings.ingest(rows, atomic=True)
    assert "readings[1]" in str(e.value)
    with pytest.raises(kdelta.NotFound):
        client.readings.range(s)
    (w,) = client.readings.ingest(rows)
    assert (w.count, w.rejected_count) == (2, 1)
    assert [(r["at"], r["reason"]) for r in w.rejected] == [("readings[1]", "bad_timestamp")]
    assert [x.value for x in client.readings.range(s)] == [1.0, 3.0]


def test_documents_history_as_of_diff_list(client: kdelta.Client, prefix: str) -> None:
    k = prefix + "setpoint"
    v1 = client.docs.put(k, {"temp": 22})
    v2 = client.docs.put(k, {"temp": 24, "mode": "eco"})
    assert client.docs.get(k).value == {"temp": 24, "mode": "eco"}
    assert client.docs.get(k, as_of=v1.hlc).value == {"temp": 22}
    assert client.docs.get(k, as_of=v1.time + dt.timedelta(microseconds=500)).value == {"temp": 22}
    h = client.docs.history(k)
    assert [v.hlc for v in h] == [v2.hlc, v1.hlc] and h[0].supersedes == [kdelta.Dot(v1.actor, v1.seq)]
    assert client.docs.history(k, limit=1) == h[:1]
    d = client.docs.diff(k, v1.hlc, v2.hlc)
    assert d.before == {"temp": 22} and d.after == {"temp": 24, "mode": "eco"}
    assert {(c.path, c.op) for c in d.changes} == {("/temp", "changed"), ("/mode", "added")}
    assert [s.value for s in client.docs.siblings(k)] == [{"temp": 24, "mode": "eco"}]
    client.docs.put(prefix + "other", 1)
    assert [x.key for x in client.docs.list(prefix)] == [prefix + "other", k]
    assert [x.key for x in client.docs.list(prefix, limit=1)] == [prefix + "other"]
    tomb = client.docs.delete(k)
    assert tomb.deleted
    with pytest.raises(kdelta.NotFound) as e:
        client.docs.get(k)
    assert e.value.code == "not_found"
    assert client.docs.get(k, as_of=v2.hlc).value["mode"] == "eco"


def test_doc_batch_is_one_atomic_change(client: kdelta.Client, prefix: str) -> None:
    a, b, c = prefix + "a", prefix + "b", prefix + "c"
    client.docs.put(c, "old")
    written = client.docs.batch({a: {"on": True}, b: None, c: kdelta.DELETE})
    assert [v.key for v in written] == [a, b, c]
    assert len({(v.seq, v.hlc) for v in written}) == 1
    assert written[1].value is None and not written[1].deleted  # JSON null is a value
    assert written[2].deleted and len(written[2].supersedes) == 1
    assert client.docs.get(a).value == {"on": True}
    assert [v.seq for v in client.docs.history(c)] == [written[2].seq, written[2].seq - 1]
    with pytest.raises(kdelta.NotFound):
        client.docs.get(c)
    # A bad entry refuses the whole batch and names the entry; nothing is stored.
    with pytest.raises(kdelta.NotFound) as e:
        client.docs.batch([(prefix + "new", 1), (prefix + "missing", kdelta.DELETE)])
    assert e.value.code == "not_found" and e.value.message.startswith("entry 1:")
    with pytest.raises(kdelta.InvalidInput) as dup:
        client.docs.batch([(prefix + "new", 1), (prefix + "new", 2)])
    assert dup.value.code == "invalid_batch"
    with pytest.raises(kdelta.NotFound):
        client.docs.get(prefix + "new")
    with pytest.raises(ValueError):
        client.docs.batch({})


def test_twins(client: kdelta.Client, prefix: str) -> None:
    k = prefix + "device"
    w = client.twins.create(k, {"desired": {}})
    assert w.changed and w.value == {"desired": {}}
    with pytest.raises(kdelta.Conflict) as e:
        client.twins.create(k)
    assert e.value.code == "twin_exists"
    p = client.twins.merge_patch(k, {"desired": {"setpoint": 22}})
    client.twins.ops(k, [{"op": "increment", "path": "/reported/boots", "by": 2}])
    assert client.twins.get(k).value == {"desired": {"setpoint": 22}, "reported": {"boots": 2}}
    assert p.hlc is not None and client.twins.get(k, as_of=p.hlc).value == {"desired": {"setpoint": 22}}
    h = client.twins.history(k)
    assert len(h) == 3 and h[0].paths[0].startswith("/reported") and h[2].paths == ["/desired"]
    d = client.twins.diff(k, p.hlc)
    assert any(c.path.startswith("/reported") for c in d.changes)
    assert client.twins.list(prefix) == [k]
    with pytest.raises(kdelta.InvalidInput) as bad:
        client.twins.ops(k, [{"op": "delete", "path": "/nope"}])
    assert bad.value.code == "invalid_patch"
    with pytest.raises(kdelta.Conflict) as wk:
        client.docs.put(k, 1)
    assert wk.value.code == "wrong_kind"


def test_events_stream_sees_a_write(client: kdelta.Client, prefix: str) -> None:
    k = prefix + "evt"
    got: list = []

    def listen() -> None:
        for ev in client.events(kind="doc", prefix=prefix):
            got.append(ev)
            return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        client.docs.put(k, {"n": 1})  # until the stream is subscribed
        t.join(0.2)
    assert got and got[0].type == "change" and got[0].key == k and got[0].kind == "doc"


def test_status_sources_peers(client: kdelta.Client) -> None:
    s = client.status()
    assert s.ready and len(s.actor) == 32 and s.counts["changes"] >= 0
    # No configured source; HTTP ingest shows as the row `http` once it has left a reading
    # out (another test of this agent does).
    assert [x for x in client.sources() if x.kind != "http"] == []
    assert client.peers() == []


def test_token_is_sent_as_bearer(agent: Agent) -> None:
    import httpx

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"peers": []})

    with kdelta.Client(agent.url, token="s3cret", transport=httpx.MockTransport(handler)) as c:
        c.peers()
    assert seen == ["Bearer s3cret"]


def test_unreachable_agent_is_a_transport_error_after_retries() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    c = kdelta.Client(f"http://127.0.0.1:{port}", retry=kdelta.Retry(attempts=3, backoff=0.01))
    started = time.monotonic()
    with pytest.raises(kdelta.TransportError) as e:
        c.readings.ingest([("x", 1)])
    assert not e.value.sent and time.monotonic() - started < 5


def test_ingest_retries_through_an_agent_restart(prefix: str) -> None:
    """A batch sent while the agent is down is delivered once it is back."""
    first = Agent()
    url = first.url
    port = url.rsplit(":", 1)[1]
    data = first.dir
    first.proc.terminate()
    first.proc.wait(10)
    s = prefix.replace("/", ".") + "late"
    result: list = []

    def send() -> None:
        with kdelta.Client(url, retry=kdelta.Retry(attempts=240, backoff=0.05, max_backoff=0.25)) as c:
            result.append(c.readings.ingest([(s, 1.0)]))

    t = threading.Thread(target=send)
    t.start()
    # Restart on the same port (the first agent's data dir is reused).
    import subprocess

    from agent import agent_env, binary

    proc = subprocess.Popen([str(binary()), "start", "--config", str(data / "kdelta-test.toml"),
                             "--data-dir", str(data / "data"), "--listen", f"127.0.0.1:{port}"],
                            env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t.join(90)
        assert result and result[0][0].count == 1
        with kdelta.Client(url) as c:
            assert [r.value for r in c.readings.range(s)] == [1.0]
    finally:
        proc.terminate()
        proc.wait(10)
        first.stop()


@pytest.mark.anyio
async def test_async_client(agent: Agent, prefix: str) -> None:
    async with kdelta.AsyncClient(agent.url) as c:
        s = prefix.replace("/", ".") + "a"
        (w,) = await c.readings.ingest([(s, 1.5, 1_764_000_000_000)])
        assert w.count == 1
        assert [r.value for r in await c.readings.range(s)] == [1.5]
        assert (await c.readings.aggregate(s, start=1_763_990_000_000, end=1_764_010_000_000, bucket="1h"))[0].count == 1
        v = await c.docs.put(prefix + "k", [1, 2])
        await c.docs.put(prefix + "k", [3])
        assert (await c.docs.get(prefix + "k", as_of=v.hlc)).value == [1, 2]
        assert len(await c.docs.history(prefix + "k")) == 2
        assert (await c.docs.diff(prefix + "k", v.hlc)).after == [3]
        (bv,) = await c.docs.batch([(prefix + "k", [4])])
        assert bv.supersedes == [kdelta.Dot(bv.actor, bv.seq - 1)]
        await c.twins.create(prefix + "tw", {"a": 1})
        await c.twins.merge_patch(prefix + "tw", {"b": 2})
        assert (await c.twins.get(prefix + "tw")).value == {"a": 1, "b": 2}
        assert len(await c.twins.history(prefix + "tw")) == 2
        with pytest.raises(kdelta.NotFound):
            await c.docs.get(prefix + "missing")
        assert (await c.status()).ready
