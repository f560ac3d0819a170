#!/usr/bin/env python3
"""The benchmark: cleeng-sync beside the raw-SQL floor, on the same objects, in one run.

Called by bench/run.sh (which builds the binary and starts LocalStack). For each store
and each repetition, on fresh databases:

  floor first    curl | psql COPY into a temp table + one INSERT ... ON CONFLICT
                 (SQLite: the sqlite3 shell's .import + one upsert), empty table
  sync first     cleeng-sync sync of the same object, empty store
  sync rerun     the same command again: no new object
  (refreshed)    with --refreshed-every N: every Nth subscriber marked as read from
                 Cleeng after the changed object was written (live_at, as a refresh
                 sets it), so that the changed night supersedes them
  floor changed  the 10%-changed object into the floor table holding the first
  sync changed   cleeng-sync sync of the 10%-changed object
  sling first    PostgreSQL only: `sling run` of the first object, incremental on the
  sling changed  primary key, into an empty database, then of the changed one (the peer)

Every command runs under /usr/bin/time -v for its peak RSS. Medians are printed as a
table with the ratios and the targets, and written to bench/RESULTS.md.
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENDPOINT = "http://127.0.0.1:4566"
BUCKET = "cleeng-bench"

# The floor's table: the template's columns with the store's types, keyed by email.
FLOOR_COLUMNS = (
    "email TEXT PRIMARY KEY, offer_id TEXT NOT NULL, expiry_date {date} NOT NULL, "
    "status TEXT NOT NULL, payment_method_id BIGINT NOT NULL, external_id TEXT, "
    "external_properties {json}, season_index BIGINT, coupon_code TEXT, "
    "campaign_name TEXT, coupon_uses BIGINT"
)
TRAITS = [
    "offer_id", "expiry_date", "status", "payment_method_id", "external_id",
    "external_properties", "season_index", "coupon_code", "campaign_name", "coupon_uses",
]
# The index the subscribers listing reads (subscription_traits_by_expiry): the floor keeps
# the same table, so it keeps it up too.
FLOOR_INDEX = "CREATE INDEX floor_by_expiry ON floor_traits (expiry_date)"
SET = ", ".join(f"{c} = excluded.{c}" for c in TRAITS)
DISTINCT = " OR ".join(f"t.{c} IS DISTINCT FROM excluded.{c}" for c in TRAITS)
UPSERT = (
    "INSERT INTO floor_traits AS t SELECT * FROM staging WHERE true "
    f"ON CONFLICT (email) DO UPDATE SET {SET} WHERE {DISTINCT}"
)

# Issue 32's goals (issue 19's were 1.00x, 0.60x and 0.05x).
TARGETS = {
    "first": ("first full load", 0.90),
    "changed": ("10% changed", 0.50),
    "rerun": ("rerun, no new object", 0.05),
}
RSS_LIMIT_MIB = 64
# What a refresh leaves on a subscriber: read from Cleeng now (after the changed object
# was written). The emails are user{i:08d}@...: the pattern picks every Nth.
REFRESHED = ("UPDATE subscription_traits SET live_at = {now}, live_source = 'bench' "
             "WHERE email LIKE '{pattern}'")
# The peer's release, as bench/run.sh installs it.
SLING_VERSION = "1.4.11"
NOTES_MARKER = "<!-- notes: kept across runs -->"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def s3(method: str, path: str, body: Path | None = None) -> None:
    """LocalStack accepts unsigned requests: plain HTTP is all the set-up needs."""
    data = body.open("rb") if body else None
    headers = {"Content-Length": str(body.stat().st_size)} if body else {}
    request = urllib.request.Request(f"{ENDPOINT}/{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            response.read()
    except urllib.error.HTTPError as e:
        # An existing bucket is fine.
        if not (method == "PUT" and body is None and e.code == 409):
            raise
    finally:
        if data:
            data.close()


class Measure:
    """One timed command: wall seconds and peak RSS in MiB."""

    def __init__(self, seconds: float, rss_mib: float):
        self.seconds = seconds
        self.rss_mib = rss_mib


def timed(command: list[str], env: dict | None = None, cwd: Path | None = None,
          fatal: bool = True) -> Measure | None:
    # What the step before left for the kernel to write back is written first: it
    # belongs to that step, not to the time of this one.
    os.sync()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as stats:
        start = time.monotonic()
        done = subprocess.run(
            ["/usr/bin/time", "-v", "-o", stats.name, *command],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        seconds = time.monotonic() - start
        if done.returncode != 0 and not fatal:
            log(f"{' '.join(command)[:120]} exited {done.returncode}: {done.stderr[-600:]}")
            return None
        if done.returncode != 0:
            sys.exit(
                f"bench: {' '.join(command)[:200]} exited {done.returncode}\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stats.read())
        rss = int(found.group(1)) / 1024 if found else float("nan")
    return Measure(seconds, rss)


class Postgres:
    name = "PostgreSQL"

    def __init__(self, admin_url: str):
        self.admin = admin_url
        self.base = admin_url.rsplit("/", 1)[0]
        self.version = self.psql_value(self.admin, "SHOW server_version")

    def psql(self, url: str, *commands: str, stdin=None) -> None:
        args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]
        for c in commands:
            args += ["-c", c]
        subprocess.run(args, check=True, stdin=stdin, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"})

    def psql_value(self, url: str, query: str) -> str:
        out = subprocess.run(
            ["psql", "-X", "-At", "-d", url, "-c", query], check=True, capture_output=True, text=True
        )
        return out.stdout.strip()

    def fresh(self, name: str) -> str:
        self.psql(self.admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
        return f"{self.base}/{name}"

    def store_url(self) -> str:
        return self.fresh("cleeng_bench_sync")

    def floor_reset(self) -> None:
        self.floor_url = self.fresh("cleeng_bench_floor")
        self.psql(
            self.floor_url,
            "CREATE TABLE floor_traits (" + FLOOR_COLUMNS.format(date="DATE", json="JSONB") + ")",
            FLOOR_INDEX,
        )

    def floor(self, object_url: str) -> Measure:
        staging = (
            "CREATE TEMP TABLE staging (" + FLOOR_COLUMNS.format(date="DATE", json="JSONB")
            .replace(" PRIMARY KEY", "").replace(" NOT NULL", "") + ")"
        )
        pipeline = (
            f"curl -fsS '{object_url}' | psql -X -q -v ON_ERROR_STOP=1 -d '{self.floor_url}' "
            f"-c '{staging}' -c 'COPY staging FROM STDIN (FORMAT csv, HEADER true)' -c '{UPSERT}'"
        )
        return timed(["bash", "-o", "pipefail", "-c", pipeline])

    def count(self, url: str, table: str) -> int:
        return int(self.psql_value(url, f"SELECT COUNT(*) FROM {table}"))

    def refresh(self, url: str, pattern: str) -> None:
        self.psql(url, REFRESHED.format(now="now()", pattern=pattern))

    def sling_reset(self) -> None:
        self.sling_url = self.fresh("cleeng_bench_sling")

    def sling(self, prefix: str) -> Measure:
        """The peer: Sling from the same S3 object, upserting on the email."""
        env = dict(os.environ)
        env.update({
            "BENCH_S3": (
                f'{{"type": "s3", "bucket": "{BUCKET}", "access_key_id": "test", '
                f'"secret_access_key": "test", "endpoint": "{ENDPOINT}", "region": "us-west-2"}}'
            ),
            "BENCH_PG": self.sling_url + "?sslmode=disable",
            "SLING_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
        })
        # Not fatal: the peer failing (LocalStack reset Sling's read of a 958 MB object
        # once) says nothing of cleeng-sync; it is tried again, then left out.
        command = [
            os.environ["SLING_BIN"], "run", "--src-conn", "BENCH_S3",
            "--src-stream", f"s3://{BUCKET}/{prefix}export.csv",
            "--tgt-conn", "BENCH_PG", "--tgt-object", "public.sling_traits",
            "--mode", "incremental", "--primary-key", "user_email",
        ]
        return timed(command, env=env, fatal=False) or timed(command, env=env, fatal=False)


class Sqlite:
    name = "SQLite"

    def __init__(self, work: Path):
        self.work = work
        self.version = subprocess.run(
            ["sqlite3", "--version"], check=True, capture_output=True, text=True
        ).stdout.split()[0]

    def fresh(self, name: str) -> Path:
        path = self.work / name
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return path

    def store_url(self) -> str:
        return f"sqlite://{self.fresh('sync.db')}"

    def floor_reset(self) -> None:
        self.floor_db = self.fresh("floor.db")
        subprocess.run(
            # The page size cleeng-sync gives a new store (src/store/sqlite/mod.rs).
            ["sqlite3", str(self.floor_db), "PRAGMA page_size=8192", "PRAGMA journal_mode=WAL",
             "CREATE TABLE floor_traits (" + FLOOR_COLUMNS.format(date="TEXT", json="TEXT") + ")",
             FLOOR_INDEX],
            check=True, stdout=subprocess.DEVNULL,
        )

    def floor(self, object_url: str) -> Measure:
        # The same pragmas cleeng-sync uses (WAL, synchronous NORMAL, an 8 MiB page
        # cache); one transaction.
        return timed([
            "sqlite3", str(self.floor_db),
            "PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA cache_size=-8192",
            "CREATE TEMP TABLE staging (" + ", ".join(["email"] + TRAITS) + ")",
            f".import --csv --skip 1 --schema temp '|curl -fsS {object_url}' staging",
            f"BEGIN; {UPSERT}; COMMIT;",
        ])

    def refresh(self, url: str, pattern: str) -> None:
        # The day's refreshes are small transactions, checkpointed as the WAL grows; one
        # statement marking them all would leave most of the table's pages in the WAL.
        now = "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')"  # as cleeng-sync writes it
        subprocess.run(["sqlite3", url.removeprefix("sqlite://"),
                        REFRESHED.format(now=now, pattern=pattern),
                        "PRAGMA wal_checkpoint(TRUNCATE)"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def count(self, url: str, table: str) -> int:
        path = url.removeprefix("sqlite://")
        out = subprocess.run(["sqlite3", path, f"SELECT COUNT(*) FROM {table}"],
                             check=True, capture_output=True, text=True)
        return int(out.stdout.strip())


def offer_map(plans: int, work: Path) -> Path | None:
    """A config whose connector has an offer map of `plans` plans over ten countries;
    the exports' offers are PL ones, the first `plans` of them mapped: every row is
    looked up, and most are warned about (unmapped_offer), the costlier case."""
    if plans == 0:
        return None
    countries = ["PL", "DE", "US", "FR", "ES", "IT", "NL", "SE", "GB", "BR"]
    lines = ["[[connector]]", 'id = "default"', f'source = "s3://{BUCKET}/"', "[connector.offers]"]
    for k in range(plans):
        offers = ", ".join(f'{c} = "S{100000000 + k + 1000 * n:09d}_{c}"' for n, c in enumerate(countries))
        lines.append(f"plan-{k:02d} = {{ {offers} }}")
    path = work / "offers.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def sync(binary: Path, store_url: str, prefix: str, work: Path, config: Path | None = None) -> Measure:
    env = dict(os.environ)
    env.update({
        "AWS_ENDPOINT_URL": ENDPOINT, "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-west-2",
        "NO_COLOR": "1",
    })
    for inherited in ("CLEENG_SYNC_STORE", "CLEENG_SYNC_CONFIG", "CLEENG_SYNC_SOURCE"):
        env.pop(inherited, None)
    flags = ["--config", str(config)] if config else []
    return timed(
        [str(binary), *flags, "-q", "sync", "--source", f"s3://{BUCKET}/{prefix}", "--store", store_url],
        env=env, cwd=work,
    )


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{mem_kib / 1024 / 1024:.0f} GiB"
    except (OSError, AttributeError):
        mem = "unknown memory"
    return f"{os.cpu_count()} cores ({cpu}), {mem}, {platform.system()} {platform.release()}"


def main() -> int:
    parser = argparse.ArgumentParser(description="cleeng-sync beside the raw-SQL floor")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--binary", type=Path, default=ROOT / "target/release/cleeng-sync")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--offer-plans", type=int, default=0,
                        help="run cleeng-sync with an offer map of this many plans")
    parser.add_argument("--refreshed-every", type=int, default=0, choices=[0, 10, 100, 1000],
                        help="mark every Nth subscriber refreshed before the changed night")
    parser.add_argument("--admin-url", default=os.environ.get(
        "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()

    data = HERE / "data"
    data.mkdir(exist_ok=True)
    files = {"first": data / f"n{args.rows}-first.csv", "changed": data / f"n{args.rows}-changed.csv"}
    for kind, path in files.items():
        if not path.exists():
            log(f"generating {path.name}")
            every = ["--changed-every", "10"] if kind == "changed" else []
            subprocess.run([sys.executable, str(HERE / "generate.py"), str(args.rows), str(path), *every],
                           check=True)
    s3("PUT", BUCKET)
    prefixes = {kind: f"n{args.rows}/{kind}/" for kind in files}
    for kind, path in files.items():
        log(f"uploading {path.name} ({path.stat().st_size / 1e6:.0f} MB) to s3://{BUCKET}/{prefixes[kind]}")
        s3("PUT", f"{BUCKET}/{prefixes[kind]}export.csv", path)
    urls = {kind: f"{ENDPOINT}/{BUCKET}/{prefixes[kind]}export.csv" for kind in files}

    work = Path(tempfile.mkdtemp(prefix="cleeng-bench-"))
    config = offer_map(args.offer_plans, work)
    stores = []
    if args.store in ("sqlite", "both"):
        stores.append(Sqlite(work))
    if args.store in ("postgres", "both"):
        stores.append(Postgres(args.admin_url))

    results = {}
    for store in stores:
        runs = {k: [] for k in ("floor first", "sync first", "sync rerun", "floor changed", "sync changed")}
        for rep in range(1, args.reps + 1):
            log(f"{store.name}, repetition {rep} of {args.reps}")
            store.floor_reset()
            url = store.store_url()
            runs["floor first"].append(store.floor(urls["first"]))
            runs["sync first"].append(sync(args.binary, url, prefixes["first"], work, config))
            runs["sync rerun"].append(sync(args.binary, url, prefixes["first"], work, config))
            if args.refreshed_every:
                zeros = len(str(args.refreshed_every)) - 1
                pattern = "user" + "_" * (8 - zeros) + "0" * zeros + "@%"
                try:
                    store.refresh(url, pattern)
                except subprocess.CalledProcessError:
                    # A binary from before live state has no live_at: nothing to mark.
                    log("no live_at column in this store: nothing marked refreshed")
            runs["floor changed"].append(store.floor(urls["changed"]))
            runs["sync changed"].append(sync(args.binary, url, prefixes["changed"], work, config))
            if hasattr(store, "sling"):
                store.sling_reset()
                first, changed = store.sling(prefixes["first"]), None
                if first:
                    changed = store.sling(prefixes["changed"])
                slung = store.count(store.sling_url, "sling_traits") if changed else 0
                if changed and slung != args.rows:
                    sys.exit(f"bench: Sling loaded {slung} rows, expected {args.rows}")
                for kind, measure in (("first", first), ("changed", changed)):
                    if measure:
                        runs.setdefault(f"sling {kind}", []).append(measure)
            # A benchmark that loads nothing proves nothing.
            stored = store.count(url, "subscription_traits")
            floored = store.count(getattr(store, "floor_url", None) or f"sqlite://{store.floor_db}",
                                  "floor_traits")
            if stored != args.rows or floored != args.rows:
                sys.exit(f"bench: {store.name} holds {stored} traits and {floored} floor rows, "
                         f"expected {args.rows}")
        results[store] = {
            name: Measure(statistics.median(m.seconds for m in ms), max(m.rss_mib for m in ms))
            for name, ms in runs.items()
        }
    shutil.rmtree(work, ignore_errors=True)

    report = render(args, stores, results, files)
    print(report)
    # What was written by hand below the marker (the analysis) survives a new run.
    notes = ""
    if args.results.exists():
        previous = args.results.read_text()
        if NOTES_MARKER in previous:
            notes = previous[previous.index(NOTES_MARKER):]
    args.results.write_text(report + "\n" + (notes or NOTES_MARKER + "\n"))
    log(f"written to {args.results}")
    return 0


def render(args, stores, results, files) -> str:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    size = files["first"].stat().st_size / 1e6
    lines = [
        "# Benchmark results",
        "",
        f"`bench/run.sh --rows {args.rows} --reps {args.reps}"
        + (f" --offer-plans {args.offer_plans}" if args.offer_plans else "")
        + (f" --refreshed-every {args.refreshed_every}" if args.refreshed_every else "")
        + f"`, commit {commit}, "
        f"{datetime.date.today().isoformat()}.",
        "",
        f"Machine: {machine()}. Object: {args.rows:,} rows, {size:.0f} MB of CSV, served by "
        f"LocalStack (host mode) on 127.0.0.1. Times are medians of {args.reps} runs, RSS the "
        "highest peak seen (`/usr/bin/time -v`).",
        "",
        "| store | scenario | floor s | cleeng-sync s | ratio | target | peak RSS MiB | verdict "
        f"| Sling {SLING_VERSION} s | Sling ratio |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for store in stores:
        r = results[store]
        pairs = {
            "first": (r["floor first"], r["sync first"]),
            "changed": (r["floor changed"], r["sync changed"]),
            "rerun": (r["floor first"], r["sync rerun"]),
        }
        for kind, (floor, ours) in pairs.items():
            label, target = TARGETS[kind]
            ratio = ours.seconds / floor.seconds
            ok = ratio <= target and ours.rss_mib <= RSS_LIMIT_MIB
            peer = r.get(f"sling {kind}")
            sling = f"{peer.seconds:.2f} | {peer.seconds / floor.seconds:.2f}x" if peer else "| "
            if not peer and kind != "rerun" and hasattr(store, "sling"):
                sling = "failed | "
            lines.append(
                f"| {store.name} {store.version} | {label} | {floor.seconds:.2f} | {ours.seconds:.2f} "
                f"| {ratio:.2f}x | <= {target:.2f}x | {ours.rss_mib:.0f} | {'met' if ok else 'MISSED'} "
                f"| {sling} |"
            )
    lines += [
        "",
        f"Peak RSS target: <= {RSS_LIMIT_MIB} MiB at every size. The rerun is compared with "
        "the floor of a full load. Sling (PostgreSQL only) runs `sling run --mode incremental "
        "--primary-key user_email` from the same S3 object into its own database: its first "
        "load into an empty one, its changed night onto its first.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
