"""How fast the daemon's status page answers with a long ledger, beside the floor: the
same queries the page makes, sent straight to the store. Run by bench/status.sh, which
builds the release binary first.

Per store: a fresh store migrated by the binary (one sync of the sample export), then
N runs (default 10,000) written straight into the ledger: mostly applied, some
unchanged, refused and failed, each refused run with 200 rejections, and 2,000 billing
actions. A daemon is started on it; GET / and GET /runs/{id} (a refused run: its
rejection groups) are requested over one keep-alive connection, after a warm-up.
Figures: median, p95 and max in milliseconds, with and without the admin token.
"""

import argparse
import http.client
import os
import pathlib
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/cleeng-sync"
TOKEN = "bench-token-5b1e"
ADMIN_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")

# The statements the page sends for one connector (`GET /`), in SQLite's dialect: the
# floor the page's time is set beside.
FLOOR_SQL = [
    "SELECT * FROM sync_runs WHERE connector = 'default' ORDER BY id DESC LIMIT 30",
    "SELECT * FROM sync_runs WHERE connector = 'default' AND outcome IN "
    "('applied', 'unchanged', 'no_export', 'dry_run') ORDER BY id DESC LIMIT 1",
    "SELECT * FROM sync_runs ORDER BY id DESC LIMIT 20",
    "SELECT * FROM cleeng_actions ORDER BY id DESC LIMIT 20",
]


def ledger_sql(runs, actions, seed=7):
    """INSERT statements for `runs` runs (rejections of the refused ones) and `actions`
    actions, valid on both stores."""
    rnd = random.Random(seed)
    start = 1_767_225_600  # 2026-01-01T00:00:00Z; the dates only need to be in order
    out, run_rows, rejections = [], [], []
    first_id = 2  # the migrating sync wrote run 1
    for i in range(runs):
        run_id = first_id + i
        at = start + i * 3600
        # The newest run refused, so that the page shows its banner.
        r = rnd.random()
        outcome = "refused" if i == runs - 1 else (
            "applied" if r < 0.80 else "unchanged" if r < 0.90 else "refused" if r < 0.95 else "failed")
        read = 1_000_000 + rnd.randrange(50_000)
        rejected = 200 if outcome == "refused" else rnd.randrange(5)
        message = {
            "refused": f"refused by max_rejected_ratio: {rejected} rows rejected",
            "failed": "cannot list s3://engage-traits/cleeng/: connection reset",
        }.get(outcome)
        stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        run_rows.append(
            "('default', 'schedule', '{slot}', '{s}', '{f}', '{o}', 'cleeng/{i}.csv', '\"e{i}\"', "
            "'{h:064x}', {read}, {valid}, {rej}, {ins}, {upd}, {unch}, {rem}, {msg}, '{{\"unmapped_offer\": 3}}')".format(
                slot=stamp(at) + " America/Los_Angeles", s=stamp(at), f=stamp(at + 120), o=outcome, i=i,
                h=rnd.getrandbits(256), read=read, valid=read - rejected, rej=rejected,
                ins=rnd.randrange(1000), upd=rnd.randrange(100_000), unch=read - 100_000,
                rem=rnd.randrange(1000), msg=f"'{message}'" if message else "NULL"))
        if outcome == "refused":
            for k in range(rejected):
                rejections.append(
                    f"({run_id}, {k + 2}, 'expiry_date', 'invalid_date', '2099-02-30', 'user{k}@example.com')")
    cols = ("connector, \"trigger\", scheduled_for, started_at, finished_at, outcome, object_key, "
            "object_etag, object_sha256, rows_read, rows_valid, rows_rejected, inserted, updated, "
            "unchanged, removed, message, warnings")
    for chunk in range(0, len(run_rows), 500):
        out.append(f"INSERT INTO sync_runs ({cols}) VALUES\n" + ",\n".join(run_rows[chunk:chunk + 500]) + ";")
    for chunk in range(0, len(rejections), 1000):
        out.append("INSERT INTO sync_rejections (run_id, record, \"column\", reason, value, email) VALUES\n"
                   + ",\n".join(rejections[chunk:chunk + 1000]) + ";")
    action_rows = []
    for i in range(actions):
        status = "unknown" if i % 97 == 0 else ("succeeded" if i % 5 else "refused")
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + i * 600))
        action_rows.append(
            f"('default', 'user{i}@example.com', 'apply_coupon', '{{\"coupon_code\": \"W{i}\"}}', 'key-{i}', "
            f"'{i:064x}', 'api', '{status}', 200, NULL, NULL, 7, 1, 'bench', '{at}', '{at}', '{at}')")
    for chunk in range(0, len(action_rows), 500):
        out.append("INSERT INTO cleeng_actions (connector, email, action, params, idempotency_key, "
                   "request_hash, \"trigger\", status, http_status, code, message, subscription_id, "
                   "attempts, owner, lease_until, requested_at, finished_at) VALUES\n"
                   + ",\n".join(action_rows[chunk:chunk + 500]) + ";")
    return "\n".join(out), first_id + runs - 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_requests(port, path, n, token=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    times, size = [], 0
    for i in range(n + 20):  # 20 of warm-up, not counted
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        took = (time.perf_counter() - t0) * 1000
        if response.status != 200:
            sys.exit(f"bench: GET {path} answered {response.status}: {body[:300]!r}")
        size = len(body)
        if i >= 20:
            times.append(took)
    conn.close()
    times.sort()
    return {"p50": statistics.median(times), "p95": times[int(len(times) * 0.95) - 1], "max": times[-1], "bytes": size}


def floor_ms(store, url, n):
    """The page's statements straight to the store, on one connection: median ms for the set."""
    times = []
    if store == "sqlite":
        db = sqlite3.connect(url.removeprefix("sqlite://"))
        for _ in range(n + 20):
            t0 = time.perf_counter()
            for sql in FLOOR_SQL:
                db.execute(sql).fetchall()
            times.append((time.perf_counter() - t0) * 1000)
        db.close()
    else:
        script = "\\timing on\n" + "\n".join(s + ";" for s in FLOOR_SQL * (n + 20)) + "\n"
        out = subprocess.run(["psql", "-X", "-q", "-o", "/dev/null", url], input=script, text=True,
                             capture_output=True, check=True).stdout
        each = [float(line.split()[1]) for line in out.splitlines() if line.startswith("Time:")]
        k = len(FLOOR_SQL)
        times = [sum(each[i:i + k]) for i in range(0, len(each), k)]
    return statistics.median(times[20:])


def bench(store, runs, requests):
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="cleeng-status-"))
    name = f"cleeng_bench_status_{os.getpid()}"
    if store == "sqlite":
        url = f"sqlite://{scratch}/traits.db"
    else:
        subprocess.run(["psql", "-X", "-q", ADMIN_URL, "-c", f"CREATE DATABASE {name}"], check=True)
        base = ADMIN_URL.split("?")[0].rsplit("/", 1)[0]
        url = f"{base}/{name}"
    env = dict(os.environ, CLEENG_SYNC_STORE=url, NO_COLOR="1")
    try:
        subprocess.run([BIN, "sync", "--source", ROOT / "samples/exports", "-q"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        sql, newest = ledger_sql(runs, 2000)
        t0 = time.perf_counter()
        if store == "sqlite":
            db = sqlite3.connect(url.removeprefix("sqlite://"))
            db.executescript(sql)
            db.commit()
            db.close()
        else:
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url], input=sql, text=True, check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run(["psql", "-X", "-q", url, "-c", "ANALYZE"], check=True)
        print(f"bench: {store}: {runs} runs written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        port = free_port()
        config = scratch / "cleeng-sync.toml"
        # A cron that never comes due while the bench runs: 29 February, 03:00.
        config.write_text(
            f'[schedule]\ncron = "0 0 3 29 2 *"\ntimezone = "America/Los_Angeles"\n'
            f'[server]\nlisten = "127.0.0.1:{port}"\n'
            f'[[connector]]\nid = "default"\nsource = "{ROOT / "samples/exports"}"\n')
        daemon = subprocess.Popen([BIN, "--config", config, "daemon"], env=dict(env, CLEENG_SYNC_SERVER_TOKEN=TOKEN),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 30
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    conn.request("GET", "/readyz")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    sys.exit("bench: the daemon never got ready")
                time.sleep(0.1)
            return {
                "/": timed_requests(port, "/", requests),
                "/ (token)": timed_requests(port, "/", requests, TOKEN),
                f"/runs/{newest}": timed_requests(port, f"/runs/{newest}", requests),
                f"/runs/{newest} (token)": timed_requests(port, f"/runs/{newest}", requests, TOKEN),
                "floor": floor_ms(store, url, requests),
            }
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if store == "postgres":
            subprocess.run(["psql", "-X", "-q", ADMIN_URL, "-c", f"DROP DATABASE IF EXISTS {name}"], check=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--results", default=str(ROOT / "bench/RESULTS-status.md"))
    args = parser.parse_args()
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    lines = [
        f"# The status page with {args.runs:,} runs in the ledger",
        "",
        f"`bench/status.sh --runs {args.runs} --requests {args.requests}`: {args.requests} requests each over one "
        "keep-alive connection after 20 of warm-up, milliseconds; the floor is the page's four statements sent "
        "straight to the store (median of the set). Target: under 50 ms.",
        "",
        "| store | page | p50 ms | p95 ms | max ms | bytes | floor p50 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for store in stores:
        figures = bench(store, args.runs, args.requests)
        floor = figures.pop("floor")
        for page, f in figures.items():
            lines.append(f"| {store} | `{page}` | {f['p50']:.2f} | {f['p95']:.2f} | {f['max']:.2f} | {f['bytes']:,} | "
                         f"{floor:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    results = pathlib.Path(args.results)
    notes = ""
    if results.exists() and "<!-- notes -->" in results.read_text():
        notes = results.read_text().split("<!-- notes -->", 1)[1]
    results.write_text(text + "\n<!-- notes -->" + (notes or "\n"))


if __name__ == "__main__":
    main()
