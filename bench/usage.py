"""``python -m bench usage``: the usage pipeline on a synthetic month of access log.

1. Generate a month of ferryman access log (default: >= 10 million lines from 100,000 clients), one
   file per UTC day as a daily log rotation leaves them, in parallel worker processes (numpy draws the
   sessions, Python formats the lines).  Sessions cross midnight, customers log in mid-session, clicks
   repeat within the double-click window, a few logins are denied, some clients share a NAT address.
2. Run ``ferryman usage daily`` for every day in turn (each needs the sessions its predecessor left
   open) and ``ferryman usage monthly``, each as a child process: wall time, CPU time and peak RSS
   come from ``os.wait4`` of that child.  Daily throughput is log lines per CPU-second, i.e. per core.
3. Month-end memory against the number of clients: the monthly merge again on synthetic daily files
   of ``--clients`` and ``--clients-large`` (default 4x) clients, same number of days; the merge's
   memory is bounded by one client at a time, so its peak RSS should not move.

Writes ``bench/results/usage-<stamp>.json`` and ``usage-latest.md``.  ``--scale 0.05`` is a quick run
(half a million lines, 5,000 clients); the default run takes about ten minutes on two cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson

from bench._common import ROOT, BenchError, fmt_number, machine_info, markdown_table, write_results

MONTH = "2026-11"
DEFAULT_LINES = 10_200_000
DEFAULT_CLIENTS = 100_000
MEAN_LINES_PER_SESSION = 8.0
MEAN_GAP_S = 40.0
REPEAT_SHARE = 0.15  # lines that repeat the previous resource within the double-click window
TCP_SHARE = 0.2  # sessions that are plain tcp connections (no session id, no client id)
NAT_SHARE = 0.1  # sessions behind one of a few shared addresses
NAT_ADDRESSES = 200
OPS = ("incr", "get", "cart_add", "join_room", "move", "chat", "inventory", "shop", "leave_room", "ping")
OP_WEIGHTS = (20, 25, 6, 8, 20, 8, 5, 3, 3, 2)
DENIED_LOGIN_SHARE = 0.02


# -- the synthetic month ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GenSpec:
    year: int
    month: int
    days: int
    lines: int
    clients: int
    seed: int


def _month_days(year: int, month: int) -> int:
    nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
    return (nxt - dt.date(year, month, 1)).days


def _sessions_of_day(spec: GenSpec, day_index: int) -> dict[str, np.ndarray]:
    """Every line of the sessions that start on ``day_index`` (may be -1), as arrays, unsorted."""
    rng = np.random.default_rng([spec.seed, day_index + 1])
    per_day = spec.lines / spec.days
    n = max(1, int(per_day / MEAN_LINES_PER_SESSION))
    lengths = rng.geometric(1.0 / MEAN_LINES_PER_SESSION, n)
    total = int(lengths.sum())
    # Skewed popularity: client k is drawn with density ~ 1/sqrt(k), so a few are heavy users and
    # every client still shows up a few times in a month.
    client = np.minimum((rng.random(n) ** 2 * spec.clients).astype(np.int64), spec.clients - 1)
    tcp = rng.random(n) < TCP_SHARE
    nat = rng.random(n) < NAT_SHARE
    day0_s = int(dt.datetime(spec.year, spec.month, 1, tzinfo=dt.UTC).timestamp()) + day_index * 86_400
    start_us = (day0_s + rng.random(n) * 86_400) * 1_000_000
    session = np.repeat(np.arange(n), lengths)
    first = np.cumsum(lengths) - lengths
    pos = np.arange(total) - np.repeat(first, lengths)
    repeat = (rng.random(total) < REPEAT_SHARE) & (pos >= 2)
    gap_s = np.where(repeat, rng.uniform(1.0, 25.0, total), rng.exponential(MEAN_GAP_S, total))
    gap_s[pos == 0] = 0.0
    cum = np.cumsum(gap_s)
    offset_s = cum - np.repeat(cum[first], lengths)
    t_us = (np.repeat(start_us, lengths) + offset_s * 1_000_000).astype(np.int64)
    weights = np.array(OP_WEIGHTS, dtype=float)
    op = rng.choice(len(OPS), total, p=weights / weights.sum()) + 2  # 0 hello, 1 login, 2.. OPS
    op[pos == 0] = 0
    op[pos == 1] = 1
    prev = np.roll(op, 1)
    op = np.where(repeat, prev, op)
    line_tcp = np.repeat(tcp, lengths)
    denied = (op == 1) & (rng.random(total) < DENIED_LOGIN_SHARE)
    return {
        "t_us": t_us,
        "session": session + (day_index + 1) * 10_000_000,
        "client": np.repeat(client, lengths),
        "nat": np.repeat(nat, lengths),
        "tcp": line_tcp,
        "pos": pos,
        "op": op,
        "denied": denied,
        "count": np.where(line_tcp, 1, rng.integers(1, 6, total)),
        "bytes_in": rng.integers(40, 4000, total),
        "bytes_out": rng.integers(40, 16000, total),
        "port": rng.integers(1024, 65535, total),
    }


def generate_day(spec: GenSpec, day_index: int, path: str) -> int:
    """Write the lines whose time falls on ``day_index`` (UTC) to ``path``; returns how many."""
    parts = [_sessions_of_day(spec, day_index - 1), _sessions_of_day(spec, day_index)]
    day0_us = (
        int(dt.datetime(spec.year, spec.month, 1, tzinfo=dt.UTC).timestamp()) + day_index * 86_400
    ) * 1_000_000
    day1_us = day0_us + 86_400 * 1_000_000
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = (cols["t_us"] >= day0_us) & (cols["t_us"] < day1_us)
    order = np.argsort(cols["t_us"][keep], kind="stable")
    cols = {k: v[keep][order] for k, v in cols.items()}
    n = len(cols["t_us"])
    date = (dt.date(spec.year, spec.month, 1) + dt.timedelta(days=day_index)).isoformat()
    hms = [f"{date}T{h:02d}:{m:02d}:{s:02d}." for h in range(24) for m in range(60) for s in range(60)]
    ops = ["hello", "login", *OPS]
    rel_us = (cols["t_us"] - day0_us).tolist()
    session, client, nat, tcp = (cols[k].tolist() for k in ("session", "client", "nat", "tcp"))
    pos, op, denied, count = (cols[k].tolist() for k in ("pos", "op", "denied", "count"))
    bytes_in, bytes_out, port = (cols[k].tolist() for k in ("bytes_in", "bytes_out", "port"))
    out: list[str] = []
    append = out.append
    with open(path, "w", encoding="ascii") as f:
        for i in range(n):
            sec, us = divmod(rel_us[i], 1_000_000)
            ts = f"{hms[sec]}{us:06d}Z"
            c = client[i]
            ip = f"172.16.{c % NAT_ADDRESSES}.1" if nat[i] else f"10.{c >> 16}.{(c >> 8) & 255}.{c & 255}"
            status = "denied" if denied[i] else "client_closed"
            if tcp[i]:
                append(
                    f'{{"ts":"{ts}","start":"{ts}","kind":"conn","conn_id":{i},"listener":"play",'
                    f'"pool":"game","server":"s{c % 8}","client_ip":"{ip}","client_port":{port[i]},'
                    f'"session":null,"client_id":null,"resource":"play","status":"{status}","count":1,'
                    f'"bytes_in":{bytes_in[i]},"bytes_out":{bytes_out[i]},"duration_s":0.5}}\n'
                )
            else:
                cid = "null" if pos[i] == 0 else f'"c{c:06d}"'
                append(
                    f'{{"ts":"{ts}","start":"{ts}","kind":"frames","conn_id":{session[i]},'
                    f'"listener":"rooms","pool":"game","server":"s{c % 8}","client_ip":"{ip}",'
                    f'"client_port":{port[i]},"session":"{session[i]:x}","client_id":{cid},'
                    f'"resource":"{ops[op[i]]}","status":"{status}","count":{count[i]},'
                    f'"bytes_in":{bytes_in[i]},"bytes_out":{bytes_out[i]},"duration_s":0.2}}\n'
                )
            if len(out) >= 8192:
                f.write("".join(out))
                out.clear()
        f.write("".join(out))
    return n


def generate_month(
    spec: GenSpec, log_dir: pathlib.Path, workers: int
) -> tuple[list[pathlib.Path], int, float]:
    """All days of the month, ``workers`` at a time; returns (files, lines, wall seconds)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        log_dir / f"access-{(dt.date(spec.year, spec.month, 1) + dt.timedelta(days=d)).isoformat()}.log"
        for d in range(spec.days)
    ]
    started = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        counts = list(pool.map(generate_day, [spec] * spec.days, range(spec.days), map(str, paths)))
    return paths, sum(counts), time.monotonic() - started


# -- synthetic daily files, for the month-end merge at several client counts ---------------------


def synthetic_stats_month(out: pathlib.Path, clients: int, lines_per_day: int, days: int, seed: int) -> int:
    """Daily ``stats`` and ``ips`` files as the daily job writes them, ``lines_per_day`` lines a day
    drawn from ``clients`` clients; returns the number of stats lines written."""
    from model.usage import files

    rng = np.random.default_rng([seed, clients])
    ops = sorted(["hello", "login", *OPS])
    total = 0
    per_client = 3  # resources per active client and day
    active = max(1, lines_per_day // per_client)
    for d in range(days):
        day = dt.date.fromisoformat(f"{MONTH}-01") + dt.timedelta(days=d)
        ids = np.sort(rng.choice(clients, size=min(active, clients), replace=False))
        counts = rng.integers(1, 40, size=(len(ids), per_client)).tolist()
        picks = [sorted(rng.choice(len(ops), per_client, replace=False).tolist()) for _ in range(len(ids))]
        lines = []
        for c, pick, n in zip(ids.tolist(), picks, counts, strict=True):
            for r, k in zip(pick, n, strict=True):
                lines.append(f"all|c{c:07d}|{ops[r]}|{k}|{k // 4}|0|{40 * k}|{300 * k}|1\n")
        files.sort_lines(lines)
        with files.GzipLines(files.stats_path(out, day, "ferryman")) as w:
            w.write_text(lines)
        ip_lines = [
            f"10.{c >> 16}.{(c >> 8) & 255}.{c & 255}|{sum(n)}|0\n"
            for c, n in zip(ids.tolist(), counts, strict=True)
        ]
        files.sort_lines(ip_lines)
        with files.GzipLines(files.ips_path(out, day, "ferryman")) as w:
            w.write_text(ip_lines)
        total += len(lines)
    return total


# -- running the jobs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One child process: wall time, CPU time and peak RSS from ``wait4``, and its JSON output."""

    wall_s: float
    cpu_s: float
    max_rss_mb: float
    result: dict[str, Any]


def run_child(argv: list[str], log: pathlib.Path) -> Run:
    """Run ``python -m proxy usage ... --json`` and account for that one child (``os.wait4``)."""
    cmd = [sys.executable, "-m", "proxy", "usage", *argv, "--json"]
    started = time.monotonic()
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.monotonic() - started
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise BenchError(f"{' '.join(cmd)} failed ({proc.returncode}):\n" + "\n".join(tail))
    # ru_maxrss is in KiB on Linux.
    return Run(wall_s, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, orjson.loads(out))


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench usage",
        description="Daily and monthly usage processing on a synthetic month of access log: time, CPU, peak RSS.",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the default month (0.05: quick)"
    )
    parser.add_argument(
        "--lines", type=int, default=None, help=f"log lines in the month (default {DEFAULT_LINES:,})"
    )
    parser.add_argument("--clients", type=int, default=None, help=f"clients (default {DEFAULT_CLIENTS:,})")
    parser.add_argument(
        "--clients-large", type=int, default=None, help="clients of the second merge (default 4x)"
    )
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="generator processes"
    )
    parser.add_argument("--memory-mb", type=int, default=64, help="monthly: memory of each sort's runs")
    parser.add_argument("--work-dir", default=None, help="where the log and outputs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--results-dir", default=None, help="default bench/results")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    lines = args.lines or max(10_000, int(DEFAULT_LINES * args.scale))
    clients = args.clients or max(1_000, int(DEFAULT_CLIENTS * args.scale))
    clients_large = args.clients_large or 4 * clients
    year, month = (int(x) for x in MONTH.split("-"))
    spec = GenSpec(year, month, _month_days(year, month), lines, clients, args.seed)
    work = (
        pathlib.Path(args.work_dir)
        if args.work_dir
        else pathlib.Path(tempfile.mkdtemp(prefix="ferryman-bench-"))
    )
    work.mkdir(parents=True, exist_ok=True)
    log = work / "jobs.log"
    try:
        return _bench(args, spec, clients_large, work, log)
    except BenchError as exc:
        print(f"bench usage: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            _progress(f"kept {work}")


def _bench(
    args: argparse.Namespace, spec: GenSpec, clients_large: int, work: pathlib.Path, log: pathlib.Path
) -> int:
    started = time.monotonic()
    _progress(f"generating {spec.lines:,} lines from {spec.clients:,} clients over {spec.days} days ...")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    paths, n_lines, gen_wall_s = generate_month(spec, work / "log", args.workers)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    log_bytes = sum(p.stat().st_size for p in paths)
    _progress(f"  {n_lines:,} lines, {log_bytes / 1e9:.2f} GB in {gen_wall_s:.1f} s ({gen_cpu_s:.1f} s CPU)")

    out = work / "usage"
    days = []
    for day_index, path in enumerate(paths):
        date = (dt.date(spec.year, spec.month, 1) + dt.timedelta(days=day_index)).isoformat()
        run = run_child(["daily", "--date", date, "--input", str(path), "--out", str(out)], log)
        r = run.result
        days.append(
            {
                "date": date,
                "lines": r["lines_read"],
                "bad_lines": r["bad_lines"],
                "clients": r["clients"],
                "sessions_carried": r["sessions_carried"],
                "wall_s": run.wall_s,
                "process_cpu_s": run.cpu_s,
                "job_cpu_s": r["cpu_s"],
                "max_rss_mb": run.max_rss_mb,
            }
        )
        _progress(
            f"  daily {date}: {r['lines_read']:,} lines, {run.wall_s:.2f} s, "
            f"{r['lines_read'] / r['cpu_s']:,.0f} lines/s per core, {run.max_rss_mb:.0f} MB"
        )
    daily_lines = sum(d["lines"] for d in days)
    daily = {
        "runs": len(days),
        "lines": daily_lines,
        "wall_s": sum(d["wall_s"] for d in days),
        "process_cpu_s": sum(d["process_cpu_s"] for d in days),
        "job_cpu_s": sum(d["job_cpu_s"] for d in days),
        "max_rss_mb": max(d["max_rss_mb"] for d in days),
        "bad_lines": sum(d["bad_lines"] for d in days),
    }
    daily["lines_per_s_per_core"] = daily_lines / daily["job_cpu_s"]
    daily["lines_per_s_per_core_with_startup"] = daily_lines / daily["process_cpu_s"]

    month_args = ["monthly", "--month", MONTH, "--memory-mb", str(args.memory_mb)]
    monthly_runs = []
    run = run_child([*month_args, "--out", str(out)], log)
    monthly_runs.append(_monthly_row("pipeline month", run))
    _progress(f"  monthly: {run.result['clients']:,} clients, {run.wall_s:.1f} s, {run.max_rss_mb:.0f} MB")
    # The merge alone at two client counts, on daily files with the same number of lines.
    stats_per_day = max(1, run.result["stats_lines"] // spec.days)
    for n_clients in (spec.clients, clients_large):
        synth = work / f"synthetic-{n_clients}"
        made = synthetic_stats_month(synth, n_clients, stats_per_day, spec.days, spec.seed)
        run = run_child([*month_args, "--out", str(synth)], log)
        monthly_runs.append(_monthly_row(f"merge only, {n_clients:,} clients", run))
        _progress(
            f"  monthly on {made:,} synthetic lines, {run.result['clients']:,} clients: "
            f"{run.wall_s:.1f} s, {run.max_rss_mb:.0f} MB"
        )
        shutil.rmtree(synth, ignore_errors=True)

    data = {
        "machine": machine_info(),
        "config": {**asdict(spec), "workers": args.workers, "memory_mb": args.memory_mb, "scale": args.scale},
        "generator": {
            "lines": n_lines,
            "bytes": log_bytes,
            "wall_s": gen_wall_s,
            "cpu_s": gen_cpu_s,
            "lines_per_s": n_lines / gen_wall_s,
        },
        "daily": {**daily, "days": days},
        "monthly": monthly_runs,
        "total_wall_s": time.monotonic() - started,
    }
    markdown = _markdown(data)
    json_path, md_path = write_results(
        "usage", data, markdown, **({"out_dir": pathlib.Path(args.results_dir)} if args.results_dir else {})
    )
    print(markdown)
    print(f"results: {json_path} and {md_path}")
    return 0


def _monthly_row(label: str, run: Run) -> dict[str, Any]:
    r = run.result
    return {
        "label": label,
        "clients": r["clients"],
        "stats_lines": r["stats_lines"],
        "ip_lines": r["ip_lines"],
        "sort_runs": r["sort_runs"],
        "wall_s": run.wall_s,
        "process_cpu_s": run.cpu_s,
        "job_cpu_s": r["cpu_s"],
        "max_rss_mb": run.max_rss_mb,
    }


def _markdown(data: dict[str, Any]) -> str:
    g, d, m = data["generator"], data["daily"], data["machine"]
    rows = [
        [
            "generate log",
            fmt_number(g["lines"]),
            fmt_number(data["config"]["clients"]),
            fmt_number(g["wall_s"]),
            fmt_number(g["cpu_s"]),
            "n/a",
            "n/a",
        ],
        [
            f"daily x {d['runs']}",
            fmt_number(d["lines"]),
            "",
            fmt_number(d["wall_s"]),
            fmt_number(d["job_cpu_s"]),
            fmt_number(d["lines_per_s_per_core"]),
            fmt_number(d["max_rss_mb"]),
        ],
    ]
    for r in data["monthly"]:
        rows.append(
            [
                f"monthly: {r['label']}",
                fmt_number(r["stats_lines"]),
                fmt_number(r["clients"]),
                fmt_number(r["wall_s"]),
                fmt_number(r["job_cpu_s"]),
                "",
                fmt_number(r["max_rss_mb"]),
            ]
        )
    table = markdown_table(
        ["stage", "lines", "clients", "wall s", "CPU s", "log lines/s per core", "peak RSS MB"], rows
    )
    big = data["monthly"][1:]
    ratio = (
        big[-1]["max_rss_mb"] / big[0]["max_rss_mb"]
        if len(big) == 2 and big[0]["max_rss_mb"]
        else float("nan")
    )
    return (
        f"## usage: a synthetic month ({data['config']['year']}-{data['config']['month']:02d})\n\n"
        + table
        + "\n"
        + f"- daily throughput: {fmt_number(d['lines_per_s_per_core'])} log lines per CPU-second in the job "
        + f"({fmt_number(d['lines_per_s_per_core_with_startup'])} counting interpreter start-up); goal 200,000.\n"
        + f"- month-end merge peak RSS at {fmt_number(big[-1]['clients'])} vs {fmt_number(big[0]['clients'])} "
        + f"clients (same number of lines): x{ratio:.2f}.\n"
        + "- monthly lines are the daily stats lines merged (one per client, resource and day); the pipeline\n"
        + "  month's clients include the addresses of sessions that never logged in.\n"
        + f"- generator: {fmt_number(g['lines_per_s'])} lines/s on {data['config']['workers']} processes.\n"
        + f"- {m['cpu']}, {m['cores']} cores, Python {m['python']}, commit {m['commit'][:12]}"
        + (" (dirty)" if m.get("dirty") else "")
        + f"; whole run {data['total_wall_s']:.0f} s.\n"
    )
