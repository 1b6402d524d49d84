#!/usr/bin/env python3
# Durable document puts over HTTP against one agent binary (docs/PERFORMANCE.md, "Signed
# change log"): 8 threads, keep-alive, each PUT
# answered after commit. Usage: puts.py BIN [PUTS_PER_THREAD]
import http.client, json, os, re, subprocess, sys, tempfile, threading, time
bin_, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 250
d = tempfile.mkdtemp()
open(os.path.join(d, "kdelta.toml"), "w").write('sources = []\ndevice_twin = false\n[api]\nlisten = "127.0.0.1:0"\n')
p = subprocess.Popen([bin_, "start", "--data-dir", os.path.join(d, "data")], cwd=d, stderr=subprocess.PIPE, text=True)
port = None
for line in p.stderr:
    m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    if m:
        port = int(m.group(1)); break
threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
lat = []
def worker(t):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(n):
        body = json.dumps({"temp": i, "thread": t})
        s = time.perf_counter()
        c.request("PUT", f"/v1/docs/bench/{t}/{i % 20}", body, {"content-type": "application/json"})
        r = c.getresponse(); r.read()
        lat.append(time.perf_counter() - s)
        assert r.status < 300, r.status
ts = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
s = time.perf_counter()
[t.start() for t in ts]; [t.join() for t in ts]
el = time.perf_counter() - s
lat.sort()
print(json.dumps({"bin": bin_, "puts": 8 * n, "puts_per_s": round(8 * n / el), "p50_ms": round(lat[len(lat)//2]*1000, 2), "p99_ms": round(lat[int(len(lat)*0.99)]*1000, 2)}))
p.terminate(); p.wait()
