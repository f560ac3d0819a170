#!/usr/bin/env python3
"""What a 10%-changed night must write, in plain SQL, with no read and no check.

    bench/writes.py --rows N [--store sqlite|postgres|both] [--binary PATH]

For each store: a fresh store, cleeng-sync's first load of bench/data/nN-first.csv (from a
folder), then, in one transaction that is rolled back, the UPDATE of every tenth
subscriber as bench/generate.py --changed-every 10 changes them (expiry moved a year,
status flipped, a new row hash), joined by email from a temporary table, timed:

  update          the traits' columns and the expiry index, as the table is
  without index   the same UPDATE after DROP INDEX subscription_traits_by_expiry,
                  then the CREATE INDEX that puts it back (timed apart)

No change feed row is written and nothing is compared: these seconds are a lower bound
for any apply of that night into the traits table as it is, to set beside 0.50x of the
floor's changed night from bench/run.sh. The staging table is built before the clock
starts. PostgreSQL is CHECKPOINTed first, as a night after a day's checkpoints would be
(every page the UPDATE touches is then logged in full, as the floor's upsert's are).
"""

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
PG_DB = "cleeng_bench_writes"
INDEX = "subscription_traits_by_expiry"
# Every tenth subscriber (user{i:08d}@...: i % 10 = 3), changed as the generator changes it.
STAGE_SQLITE = """CREATE TEMP TABLE s AS SELECT email,
  CASE WHEN substr(expiry_date, 1, 4) = '2098' THEN '2099' ELSE '2098' END
    || substr(expiry_date, 5) AS expiry_date,
  CASE status WHEN 'active' THEN 'stopped' ELSE 'active' END AS status,
  row_hash || 'x' AS row_hash
  FROM subscription_traits WHERE CAST(substr(email, 5, 8) AS INTEGER) % 10 = 3"""
STAGE_PG = """CREATE TEMP TABLE s AS SELECT email,
  expiry_date + CASE WHEN extract(year FROM expiry_date) = 2098 THEN interval '1 year'
    ELSE interval '-1 year' END AS expiry_date,
  CASE status WHEN 'active' THEN 'stopped' ELSE 'active' END AS status,
  row_hash || 'x' AS row_hash
  FROM subscription_traits WHERE substr(email, 5, 8)::bigint % 10 = 3"""
UPDATE = """UPDATE subscription_traits AS t SET expiry_date = s.expiry_date,
  status = s.status, row_hash = s.row_hash, removed_run = NULL, updated_at = {now}
  FROM s WHERE t.connector = 'default' AND t.email = s.email"""


def load(binary: Path, rows: int, store: str, work: Path) -> None:
    source = work / "source"
    source.mkdir(exist_ok=True)
    export = source / "export.csv"
    export.unlink(missing_ok=True)
    export.symlink_to(ROOT / "bench" / "data" / f"n{rows}-first.csv")
    subprocess.run([str(binary), "-q", "sync", "--source", str(source), "--store", store],
                   check=True, stdout=subprocess.DEVNULL)


def sqlite(binary: Path, rows: int, work: Path) -> dict:
    db = work / "writes.db"
    load(binary, rows, f"sqlite://{db}", work)
    out = {}
    for drop in (False, True):
        conn = sqlite3.connect(db, isolation_level=None)
        # The pragmas of the run's connection (src/store/sqlite/mod.rs).
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-6144"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute(STAGE_SQLITE)
        conn.execute("BEGIN IMMEDIATE")
        index = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (INDEX,)).fetchone()[0]
        if drop:
            conn.execute(f"DROP INDEX {INDEX}")
        start = time.monotonic()
        conn.execute(UPDATE.format(now="'2026-12-07T00:00:00Z'"))
        out["without index" if drop else "update"] = time.monotonic() - start
        if drop:
            start = time.monotonic()
            conn.execute(index)
            out["index rebuilt"] = time.monotonic() - start
        conn.execute("ROLLBACK")
        conn.close()
    return out


def psql(url: str, sql: str) -> str:
    done = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url],
                          input=sql, check=True, capture_output=True, text=True)
    return done.stdout


def postgres(binary: Path, rows: int, work: Path) -> dict:
    psql(PG_ADMIN, f"DROP DATABASE IF EXISTS {PG_DB}; CREATE DATABASE {PG_DB};")
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{PG_DB}"
    load(binary, rows, url, work)
    psql(url, "VACUUM ANALYZE subscription_traits;")
    index = psql(url, f"SELECT indexdef FROM pg_indexes WHERE indexname = '{INDEX}';").strip()
    out = {}
    for drop in (False, True):
        psql(url, "CHECKPOINT;")
        # The run's join (src/store/postgres): an index probe per staged row.
        script = "\n".join([
            "\\timing on", STAGE_PG + ";", "ANALYZE s;", "BEGIN;",
            "SET LOCAL enable_hashjoin = off;", "SET LOCAL enable_mergejoin = off;",
            f"DROP INDEX {INDEX};" if drop else "",
            UPDATE.format(now="now()") + ";",
            f"{index};" if drop else "", "ROLLBACK;",
        ])
        times = [float(line.split()[1]) / 1000 for line in psql(url, script).splitlines()
                 if line.startswith("Time:")]
        # Counted from the end: the UPDATE, (dropped) the CREATE INDEX, the ROLLBACK.
        if drop:
            out["without index"], out["index rebuilt"] = times[-3], times[-2]
        else:
            out["update"] = times[-2]
    psql(PG_ADMIN, f"DROP DATABASE {PG_DB};")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "cleeng-sync")
    args = parser.parse_args()
    if not (ROOT / "bench" / "data" / f"n{args.rows}-first.csv").exists():
        sys.exit(f"writes: bench/data/n{args.rows}-first.csv is missing: "
                 f"python3 bench/generate.py {args.rows} bench/data/n{args.rows}-first.csv")
    stores = ("sqlite", "postgres") if args.store == "both" else (args.store,)
    for name in stores:
        work = Path(tempfile.mkdtemp(prefix="cleeng-writes-"))
        try:
            out = (sqlite if name == "sqlite" else postgres)(args.binary, args.rows, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"{name} {args.rows} rows: " + ", ".join(f"{k} {v:.2f} s" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
