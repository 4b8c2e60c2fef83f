"""`python -m dse.calibrate study=<grid study> --budget KEY=V,KEY=V --budget … [--seeds N] [--target 0.75]
[--out DIR] [--dry-run] [key=value …]`: how faithfully cheaper proxies rank a table, and the cheapest that
ranks well enough.

Each `--budget` is a set of proxy overrides (dotted keys under model., data., trainer., the same rule as a
study's `proxy:`). Each budget trains the study's whole grid at N seeds in its own run directory,
runs/calibrate/<study>/<key-value__key-value>, by running

    python -m dse.search study=<study> study.seeds=<N> <budget k=v, sorted> run_dir=<dir> progress=false <extra>

with dse's default SQLite storage in that directory: a budget resumes where it stopped, each cell x seed is
trained once (dse's grid claims), and a budget whose every cell x seed has finished launches nothing.
`--dry-run` reports from what is stored and trains nothing.

Per budget it reports the CPU-minutes its trials measured (user attr `cpu_seconds`; `train_seconds`, said
so, for trials that lack it), the seeds completed, Kendall τ of its seed-mean errors against the paper's
column with dse.table's bootstrap 95% interval, and τ against the dearest budget's seed-mean ranking.
Without a paper column the dearest budget is the reference. It writes <out>/calibration.csv and
<out>/calibration.png (out: results/<study>) and prints the cheapest budget whose interval's lower bound
reaches --target, with the `proxy:` lines that make it the study's preset.
"""
from __future__ import annotations

import csv
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from dse.errors import UserError
from dse.record import TrialRecord
from dse.results.files import check_writable
from dse.storage import check_run_dir

USAGE = ("usage: python -m dse.calibrate STUDY|study=NAME --budget KEY=V[,KEY=V…] [--budget …] [--seeds N] "
         "[--target T] [--out DIR] [--dry-run] [key=value …]")
FLAGS = ("--budget", "--seeds", "--target", "--out", "--dry-run")
OWNED = ("study", "study.seeds", "run_dir", "storage", "progress")  # set by dse.calibrate itself
SAFE = re.compile(r"[A-Za-z0-9._+-]+")  # a budget value also names its run directory
COLUMNS = ["budget", "cpu_minutes", "cpu_source", "seeds", "seeds_asked", "rows", "tau", "tau_lo", "tau_hi",
           "tau_vs_dearest", "reference", "run_dir", "train_command", "command"]


def parse_budget(spec: str) -> dict[str, str]:
    """'data.subset=5000,trainer.max_epochs=2' -> {'data.subset': '5000', 'trainer.max_epochs': '2'}."""
    from dse.search import PROXY_GROUPS

    out: dict[str, str] = {}
    for item in spec.split(","):
        key, eq, value = item.strip().partition("=")
        if not eq or not key:
            raise UserError(f"--budget {spec!r}: {item.strip()!r} is not KEY=VALUE; e.g. "
                            "--budget data.subset=5000,trainer.max_epochs=2")
        if not _proxy_key(key):
            raise UserError(f"--budget: unknown key {key!r}; valid: {', '.join(g + '.<key>' for g in PROXY_GROUPS)}")
        if key in out:
            raise UserError(f"--budget {spec!r}: {key} is given twice")
        if not SAFE.fullmatch(value):
            raise UserError(f"--budget: {key}={value!r}: a value must be a number or a word (letters, digits, . _ + -)")
        out[key] = value
    return out


def slug(budget: dict[str, str]) -> str:
    """The budget's run directory name: 'data.subset-5000__trainer.max_epochs-2'."""
    return "__".join(f"{k}-{v}" for k, v in sorted(budget.items()))


def label(budget: dict[str, str]) -> str:
    """The budget as typed, keys sorted: 'data.subset=5000,trainer.max_epochs=2'."""
    return ",".join(f"{k}={v}" for k, v in sorted(budget.items()))


def parse_args(argv: list[str]) -> dict:
    """{'study', 'budgets', 'seeds', 'target', 'out', 'dry_run', 'extra'} from the command line."""
    args = {"study": None, "budgets": [], "seeds": 2, "target": 0.75, "out": None, "dry_run": False, "extra": []}
    items = list(argv)
    while items:
        item = items.pop(0)
        if not item.startswith("-"):
            key, eq, value = item.partition("=")
            if key.lstrip("+~") == "study" and eq:
                args["study"] = value
            elif not eq and args["study"] is None:  # a bare word: the study (python -m dse.calibrate wrn_table4)
                args["study"] = key
            elif key.lstrip("+~") in OWNED:
                raise UserError(f"{key}: set by dse.calibrate (use --seeds for study.seeds); "
                                f"valid flags: {', '.join(FLAGS)}")
            else:
                args["extra"].append(item)
            continue
        flag, eq, value = item.partition("=")
        if flag not in FLAGS:
            raise UserError(f"unknown flag {flag!r}; valid: {', '.join(FLAGS)}")
        if flag == "--dry-run":
            args["dry_run"] = True
            continue
        if not eq:
            if not items:
                raise UserError(f"{flag}: needs a value")
            value = items.pop(0)
        if flag == "--budget":
            args["budgets"].append(parse_budget(value))
        elif flag == "--out":
            args["out"] = value
        else:
            args[flag[2:]] = _number(flag, value, int if flag == "--seeds" else float)
    if not args["study"]:
        from dse import study as studies

        raise UserError(f"study: missing; e.g. study=wrn_table4; valid: {', '.join(studies.names())}")
    if not args["budgets"]:
        raise UserError("--budget: give at least one, e.g. --budget data.subset=5000,trainer.max_epochs=2")
    slugs = [slug(b) for b in args["budgets"]]
    twice = sorted({s for s in slugs if slugs.count(s) > 1})
    if twice:
        raise UserError(f"--budget: {label(args['budgets'][slugs.index(twice[0])])} is given twice")
    typed = {item.lstrip("+~").partition("=")[0] for item in args["extra"]}
    clash = sorted(typed & {k for b in args["budgets"] for k in b})
    if clash:
        raise UserError(f"{clash[0]}: given both as an override and in --budget; put it in each --budget")
    return args


def _number(flag: str, value: str, kind):
    """--seeds N (an integer >= 1) or --target T (in [-1, 1])."""
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or (kind is int and number < 1) or (kind is float and not -1 <= number <= 1):
        want = "an integer >= 1" if kind is int else "a Kendall τ in [-1, 1]"
        raise UserError(f"{flag}: must be {want}, got {value!r}")
    return number


def check_keys(budgets: list[dict]) -> None:
    """Every budget key is a key of dse's config (a UserError naming it and its group's valid keys)."""
    from dse.search import known_keys

    known = known_keys()
    for budget in budgets:
        for key in budget:
            if key not in known:
                group = key.split(".")[0]
                raise UserError(f"--budget: unknown key {key!r}; valid: "
                                + ", ".join(k for k in known if k.startswith(group + ".")))


def overrides(args: dict, budget: dict) -> list[str]:
    """The dse.search overrides of one budget, without its run directory."""
    return [f"study={args['study']}", f"study.seeds={args['seeds']}", *(f"{k}={v}" for k, v in sorted(budget.items())),
            "progress=false", *args["extra"]]


def train_args(args: dict, budget: dict, run_dir: Path) -> list[str]:
    """The dse.search arguments that train one budget: its overrides with run_dir=<its directory>."""
    given = overrides(args, budget)
    at = 2 + len(budget)
    return [*given[:at], f"run_dir={run_dir}", *given[at:]]


def check_study(ref: str) -> None:
    """The study exists and is a grid study (a UserError listing the grid studies otherwise)."""
    from dse import study as studies

    if not studies.load(ref).is_grid:
        grids = [n for n in studies.names() if studies.load(n).is_grid]
        raise UserError(f"study {ref!r}: not a grid study (no `grid:`); valid: {', '.join(grids)}")


def prepare(args: dict, budget: dict):
    """The validated dse.search job of one budget (bad values fail here, before anything is trained)."""
    from dse import search

    cfg = search.compose(overrides(args, budget))
    cfg["run_dir"] = str(Path("runs") / "calibrate" / cfg["study"]["name"] / slug(budget))
    check_run_dir(Path(cfg["run_dir"]))  # a damaged storage is named before any data is loaded
    return search.prepare(cfg)


def finished(study) -> set[tuple[str, int]]:
    """The cells x seeds whose trial is final: trained, refused (over the budget), or failed with a reason."""
    from dse.trials.claims import cell_of

    out = set()
    for t in study.get_trials(deepcopy=False):
        status = TrialRecord.from_trial(t).status
        final = t.state.name in ("COMPLETE", "PRUNED") or (t.state.name == "FAIL" and status is not None)
        if cell_of(t) is not None and final and status not in ("skipped", "duplicate"):
            out.add(cell_of(t))
    return out


def cost(study) -> tuple[float, str]:
    """(CPU seconds of the study's grid trials, where they come from): `cpu_seconds`, else `train_seconds`."""
    from dse.trials.claims import cell_of

    total, fallback, counted, none = 0.0, 0, 0, 0
    for t in study.get_trials(deepcopy=False) if study is not None else []:
        if cell_of(t) is None or t.state.name in ("WAITING", "RUNNING"):
            continue
        record = TrialRecord.from_trial(t)
        cpu, wall = record.cpu_seconds, record.train_seconds
        if cpu is not None:
            total, counted = total + float(cpu), counted + 1
        elif wall is not None:
            total, fallback = total + float(wall), fallback + 1
        else:
            none += 1
    parts = [f"cpu_seconds of {counted} trials"] if counted else []
    if fallback:
        parts.append(f"train_seconds (wall) of {fallback} trials without cpu_seconds")
    if none:
        parts.append(f"{none} trials record no time")
    return total, "; ".join(parts) or "no trial"


def measure(args: dict, budget: dict, job) -> dict:
    """What a budget's storage holds: errors per seed, cost, seeds completed (plain data)."""
    from dse.results import tables as table

    study = table.stored_study(job.study.name, None, job.run_dir)
    per_seed = table.by_seed(study) if study is not None else {}
    seconds, source = cost(study)
    labels = list(job.cells)
    seeds = sorted({s for runs in per_seed.values() for s in runs})
    return {"budget": label(budget), "items": budget, "run_dir": str(job.run_dir), "per_seed": per_seed,
            "labels": labels, "cpu_minutes": seconds / 60, "cpu_source": source,
            "seeds": sum(all(s in per_seed.get(lab, {}) for lab in labels) for s in seeds),
            "seeds_asked": args["seeds"],
            "train_command": "python -m dse.search " + shlex.join(train_args(args, budget, job.run_dir))}


def means(result: dict) -> dict[str, float]:
    """{row: seed-mean error} of a budget."""
    return {lab: statistics.fmean(runs.values()) for lab, runs in result["per_seed"].items() if runs}


def score(results: list[dict], paper: dict[str, float]) -> dict | None:
    """Add rows, tau, tau_lo, tau_hi, tau_vs_dearest and reference to each result; returns the dearest."""
    from dse.results import tables as table

    trained = [r for r in results if r["per_seed"]]
    dearest = max(trained, key=lambda r: r["cpu_minutes"], default=None)
    ref = means(dearest) if dearest else {}
    for r in results:
        against_paper = bool(paper)
        rows = table.seed_rows(r["labels"], r["per_seed"], paper or ref)
        tau, n = table.kendall(rows)
        interval = table.bootstrap_tau(rows)
        if not against_paper and r is dearest:  # the reference itself: τ = 1 by definition, no interval
            tau, interval = None, None
        r.update(rows=n, tau=tau, tau_lo=interval and interval[0], tau_hi=interval and interval[1],
                 reference="paper" if against_paper else f"dearest budget ({dearest['budget']})" if dearest else "",
                 tau_vs_dearest=table.kendall(table.seed_rows(r["labels"], r["per_seed"], ref))[0] if dearest else None)
    return dearest


def pick(results: list[dict], target: float, dearest: dict | None, paper: bool) -> tuple[dict | None, dict | None]:
    """(the cheapest budget whose interval's lower bound reaches target, else None; the highest lower bound)."""
    judged = [r for r in results if r["tau_lo"] is not None and (paper or r is not dearest)]
    reached = [r for r in judged if r["tau_lo"] >= target]
    best = max(judged, key=lambda r: r["tau_lo"], default=None)
    return min(reached, key=lambda r: r["cpu_minutes"], default=None), best


def proxy_lines(proxy: dict | None, budget: dict, extra: list[str]) -> str:
    """The study's `proxy:` block with the budget (and typed model./data./trainer. overrides) in it."""
    merged = dict(proxy or {})
    typed = [item.lstrip("+~").partition("=") for item in extra]
    for key, _, value in [*typed, *((k, "=", v) for k, v in sorted(budget.items()))]:
        if _proxy_key(key):
            merged[key] = _scalar(value)
    return yaml.safe_dump({"proxy": merged}, sort_keys=False, default_flow_style=False)


def _proxy_key(key: str) -> bool:
    """Is `key` a dotted model./data./trainer. key (what a study's `proxy:` may hold)?"""
    from dse.search import PROXY_GROUPS

    return "." in key and key.split(".")[0] in PROXY_GROUPS


def _scalar(text: str):
    """A typed value as YAML (and Hydra) reads it: 5000 -> int, 1e-3 -> float, true -> bool."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _fmt(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def write_csv(results: list[dict], path: Path, command: str) -> None:
    """calibration.csv: one line per budget."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in results:
            w.writerow([r["budget"], f"{r['cpu_minutes']:.4f}", r["cpu_source"], r["seeds"], r["seeds_asked"],
                        r["rows"], _fmt(r["tau"]), _fmt(r["tau_lo"]), _fmt(r["tau_hi"]), _fmt(r["tau_vs_dearest"]),
                        r["reference"], r["run_dir"], r["train_command"], command])


def report(results: list[dict], target: float, dearest, paper: bool) -> list[str]:
    """The printed summary: one line per budget, then the pick."""
    what = "τ vs the paper" if paper else "τ vs the dearest"
    lines = [f"{'budget':<44} {'CPU-min':>8} {'seeds':>6} {'rows':>5}  {what + ' [95%]':<24} τ vs dearest"]
    for r in results:
        shown = "—" if r["tau"] is None else f"{r['tau']:.2f}" + (
            f" [{r['tau_lo']:.2f}, {r['tau_hi']:.2f}]" if r["tau_lo"] is not None else "")
        lines.append(f"{r['budget']:<44} {r['cpu_minutes']:>8.1f} {r['seeds']:>3}/{r['seeds_asked']:<2} "
                     f"{r['rows']:>5}  {shown:<24} {_fmt(r['tau_vs_dearest'], 2) or '—'}"
                     + (f"  (time: {r['cpu_source']})" if "seconds (wall)" in r["cpu_source"]
                        or "no time" in r["cpu_source"] else ""))
    chosen, best = pick(results, target, dearest, paper)
    if chosen:
        partial = "" if chosen["seeds"] >= chosen["seeds_asked"] else \
            f" (partial: {chosen['seeds']} of {chosen['seeds_asked']} seeds completed)"
        lines.append(f"picked: {chosen['budget']}, the cheapest whose interval's lower bound reaches τ {target:.2f} "
                     f"({chosen['tau_lo']:.2f}; {chosen['cpu_minutes']:.1f} CPU-minutes){partial}")
    elif best:
        lines.append(f"no budget's interval reaches τ {target:.2f}; the highest lower bound is {best['tau_lo']:.2f} "
                     f"({best['budget']})")
    else:
        lines.append("no budget has a τ interval yet (train them: drop --dry-run)")
    return lines


def main(argv=None) -> int:
    """Entry point: validate every budget, train what is missing, report; user mistakes exit 2 with one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        args = parse_args(argv)
        check_study(args["study"])
        check_keys(args["budgets"])
        jobs = [prepare(args, b) for b in args["budgets"]]  # every value checked before anything runs
        from dse.results.tables import paper_column

        paper = paper_column(jobs[0].study.paper)
        check_writable(Path(args["out"] or Path("results") / jobs[0].study.name), "--out")  # before any training
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    code = 0
    try:
        for budget, job in zip(args["budgets"], jobs):
            code = max(code, train(args, budget, job))
        return max(code, summarize(args, jobs, paper, "python -m dse.calibrate " + shlex.join(argv)))
    except UserError as exc:  # a budget's storage that cannot be read (dse.storage names the file)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept in each budget's storage; re-run the command to resume",
              file=sys.stderr)
        return 130


def train(args: dict, budget: dict, job) -> int:
    """Run dse.search for a budget unless its storage holds every cell x seed finished (or --dry-run)."""
    from dse.results import tables as table

    study = table.stored_study(job.study.name, None, job.run_dir)
    want = {(lab, s) for lab in job.cells for s in range(args["seeds"])}
    left = len(want - (finished(study) if study is not None else set()))
    command = train_args(args, budget, job.run_dir)
    if not left:
        print(f"budget {label(budget)}: every cell x seed finished in {job.run_dir}; nothing to train")
        return 0
    if args["dry_run"]:
        print(f"budget {label(budget)}: {left} of {len(want)} cells x seeds not finished (--dry-run: not trained)")
        return 0
    print(f"budget {label(budget)}: training {left} of {len(want)} cells x seeds: python -m dse.search "
          + shlex.join(command), flush=True)
    rc = subprocess.run([sys.executable, "-m", "dse.search", *command]).returncode
    if rc:
        print(f"budget {label(budget)}: dse.search exited {rc}", file=sys.stderr)
    return 1 if rc else 0


def summarize(args: dict, jobs: list, paper: dict[str, float], command: str) -> int:
    """Measure every budget's storage, print the table and the pick, write calibration.csv and .png."""
    from dse.results.calibration_plot import plot

    name = jobs[0].study.name
    results = [measure(args, b, job) for b, job in zip(args["budgets"], jobs)]
    dearest = score(results, paper)
    lines = report(results, args["target"], dearest, bool(paper))
    out = Path(args["out"] or Path("results") / name)
    write_csv(results, out / "calibration.csv", command)
    title = f"{name}: Kendall τ of the seed-mean errors vs " + ("the paper" if paper else "the dearest budget")
    plot(results, out / "calibration.png", title, args["target"])
    print(f"calibrate {name}: {len(results)} budgets, {args['seeds']} seeds asked, reference: "
          + ("the paper's column" if paper else "the dearest budget"))
    print("\n".join(lines))
    chosen, _ = pick(results, args["target"], dearest, bool(paper))
    if chosen:
        where = args["study"] if args["study"].endswith((".yaml", ".yml")) else f"studies/{args['study']}.yaml"
        job = jobs[results.index(chosen)]
        print(f"to make it the study's proxy preset, set in {where}:")
        print(proxy_lines(job.study.proxy, chosen["items"], args["extra"]), end="")
        other = [e for e in args["extra"] if not _proxy_key(e.lstrip("+~").partition("=")[0])]
        if other:
            print(f"(calibrated with {' '.join(other)} as well; a preset applies under fidelity=proxy)")
    print(f"wrote {out / 'calibration.csv'}, {out / 'calibration.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
