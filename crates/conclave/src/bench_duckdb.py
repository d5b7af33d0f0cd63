# DuckDB's side of `conclave bench analysis`: the contract's SQL over the same datasets in
# plaintext Parquet, on as many threads as Conclave uses. Reads a JSON job on stdin:
#   {"tables": {"contoso": "/path/contoso.plain.parquet", ...},
#    "queries": [{"name": ..., "sql": ...}], "rounds": 3, "threads": 2}
# and prints {"duckdb": version, "seconds": best of the rounds, "rows": {query: rows},
# "peak_rss_bytes": the process's peak resident set}. Exits 3 when DuckDB is not installed.
#
# The peak is VmHWM from /proc/self/status: getrusage's ru_maxrss survives exec on Linux, so a
# child of the bench would report the bench's own peak whenever that is higher.
import json
import resource
import sys
import time

try:
    import duckdb
except ImportError as e:
    print(f"DuckDB is not installed for {sys.executable} ({e}): pip install duckdb", file=sys.stderr)
    sys.exit(3)

def peak_rss():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


job = json.load(sys.stdin)
best = None
rows = {}
for _ in range(job["rounds"]):
    con = duckdb.connect()
    con.execute(f"SET threads = {int(job['threads'])}")
    for name, path in job["tables"].items():
        literal = "'" + path.replace("'", "''") + "'"
        con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet({literal})')
    start = time.perf_counter()
    for q in job["queries"]:
        rows[q["name"]] = len(con.execute(q["sql"]).fetchall())
    took = time.perf_counter() - start
    best = took if best is None else min(best, took)
    con.close()
print(json.dumps({
    "duckdb": duckdb.__version__,
    "seconds": best,
    "rows": rows,
    "peak_rss_bytes": peak_rss(),
}))
