"""N workers on one PostgreSQL: directly (storage=postgresql://…) against through Optuna's gRPC proxy
(python -m dse.storage serve, storage=grpc://…), side by side.

usage: nice -n 10 python bench/grpc_proxy.py [--workers 8] [--trials 25] [--rounds 2] [--prefill 1000] [--out FILE]

A throw-away PostgreSQL server starts on loopback (bench/storage.py's Postgres, default durability). Each round
runs both ways, in alternating order, on a fresh study prefilled with `--prefill` finished trials; `--workers`
processes start together (a start time) and each runs `--trials` trials of dse's storage work with no training:
a random sampler's four params, dse.trials.owners.mark (the owner record; through the proxy also the lease
thread and the reap), dse.trials.claims.claim of the point, five user attrs, tell. It prints per round and way:
trials/s over the whole run (first start to last end), the median and p90 ms of one trial, and the most
PostgreSQL connections seen at once (pg_stat_activity, sampled every 0.2 s). The proxy runs on this machine too,
so it shares the cores with the workers. The last line is `ratio: X`, the proxy's trials/s over direct's,
summed over the rounds (above 1: the proxy is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def worker(url: str, name: str, trials: int, start_at: float) -> None:
    """One worker: open the storage, wait for the start, run `trials` trials, print their times as JSON."""
    import optuna

    from dse.storage import open_storage
    from dse.trials import claims, owners

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=open_storage(url, "."),
                              sampler=optuna.samplers.RandomSampler(seed=os.getpid()))
    times = []

    def objective(trial):
        t0 = time.perf_counter()
        owners.mark(trial)
        x = [trial.suggest_int(f"p{i}", 0, 63) for i in range(4)]
        claims.claim(study, f"{'-'.join(map(str, x))}:{trial.number}", trial._trial_id)
        for key in ("point_id", "status", "params", "flops", "acts"):
            trial.set_user_attr(key, 1.0)
        times.append(t0)
        return float(sum(x))

    time.sleep(max(0.0, start_at - time.time()))
    begin = time.time()
    study.optimize(objective, n_trials=trials, callbacks=[lambda s, t: times.append(time.perf_counter())])
    per = [1000 * (b - a) for a, b in zip(times[::2], times[1::2])]
    print(json.dumps({"begin": begin, "end": time.time(), "ms": per}), flush=True)


def prefill(url: str, name: str, n: int) -> None:
    """A study of `n` finished trials with four params and five user attrs each (one bulk insert per trial)."""
    import optuna

    from dse.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url, ".")
    study = optuna.create_study(study_name=name, storage=storage)
    dist = optuna.distributions.IntDistribution(0, 63)
    study.add_trials([optuna.trial.create_trial(params={f"p{i}": (k * 7 + i) % 64 for i in range(4)},
                                                distributions={f"p{i}": dist for i in range(4)},
                                                user_attrs=dict.fromkeys(("point_id", "status", "params", "flops",
                                                                          "acts"), 1.0), value=float(k))
                      for k in range(n)])
    if hasattr(storage, "engine"):
        storage.engine.dispose()  # its connections would count in the workers' peak
    else:
        storage.close()  # the gRPC channel


def connections(db_url: str) -> int:
    """Client connections to the server right now."""
    import psycopg2

    with psycopg2.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
        return int(cur.fetchone()[0]) - 1  # this query's own connection


def run_way(url: str, db_url: str, name: str, args) -> dict:
    """`args.workers` workers on `url` at once; trials/s, per-trial ms, peak connections."""
    start_at = time.time() + 8.0  # every worker has imported and opened the storage by then
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", url, name, str(args.trials), str(start_at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for _ in range(args.workers)]
    peak = 0
    while any(p.poll() is None for p in procs):
        peak = max(peak, connections(db_url))
        time.sleep(0.2)
    outs = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"worker failed ({p.returncode}):\n{err[-2000:]}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    ms = sorted(m for o in outs for m in o["ms"])
    span = max(o["end"] for o in outs) - min(o["begin"] for o in outs)
    return {"trials": len(ms), "span_s": span, "per_s": len(ms) / span, "median_ms": statistics.median(ms),
            "p90_ms": ms[int(0.9 * (len(ms) - 1))], "peak_conn": peak}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--trials", type=int, default=25, help="trials per worker per way and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--prefill", type=int, default=1000, help="finished trials in each study before the workers")
    p.add_argument("--out", type=Path, help="also write the output here, line by line")
    args = p.parse_args()
    from storage import Postgres  # bench/storage.py's throw-away server

    from dse.results.made import code
    from dse.storage import mask

    out = open(args.out, "w") if args.out else None

    def say(line: str) -> None:
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    say(f"# bench/grpc_proxy.py --workers {args.workers} --trials {args.trials} --rounds {args.rounds} "
        f"--prefill {args.prefill}; dse {code()['commit']}; {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f} at start")
    total = {"direct": [0, 0.0], "proxy": [0, 0.0]}
    with Postgres() as pg:
        port = free_port()
        log = open(Path(pg.root) / "proxy.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "dse.storage", "serve", pg.url, "--host", "127.0.0.1",
                                   "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=ENV)
        try:
            deadline = time.time() + 600
            while "storage=grpc://" not in (Path(pg.root) / "proxy.log").read_text():
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit("the proxy did not start:\n" + mask((Path(pg.root) / "proxy.log").read_text()))
                time.sleep(0.2)
            urls = {"direct": pg.url, "proxy": f"grpc://127.0.0.1:{port}"}
            say("round way     trials  span_s  trials/s  median_ms  p90_ms  peak_pg_connections")
            for r in range(args.rounds):
                for way in (("direct", "proxy") if r % 2 == 0 else ("proxy", "direct")):
                    name = f"bench{r}{way}"
                    prefill(urls[way], name, args.prefill)  # made the way its workers reach it
                    got = run_way(urls[way], pg.url, name, args)
                    total[way][0] += got["trials"]
                    total[way][1] += got["span_s"]
                    say(f"{r:5d} {way:7s} {got['trials']:7d} {got['span_s']:7.1f} {got['per_s']:9.2f} "
                        f"{got['median_ms']:10.1f} {got['p90_ms']:7.1f} {got['peak_conn']:20d}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    rate = {way: n / s for way, (n, s) in total.items()}
    say(f"direct {rate['direct']:.2f} trials/s, proxy {rate['proxy']:.2f} trials/s (all rounds); load "
        f"{os.getloadavg()[0]:.1f} at the end")
    say(f"ratio: {rate['proxy'] / rate['direct']:.2f}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(main())
