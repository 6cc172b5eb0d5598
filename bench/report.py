"""`qrun report` of a 100,000-experiment campaign: time, peak memory, file size; and the
same figures made the way a skilled user would without it (pandas + matplotlib).

The campaign: one 2-qubit OpenQASM 3 circuit (`rx(theta)`, `ry(phi)`, `cx`, measured), swept
on a 250 x 200 grid (50,000 points) on two Aer backends (`automatic` and `statevector`):
100,000 experiments of 100 shots, 1 % failing by injected fault (QRUN_FAULTS), so that the
page has histograms, two sweeps, 50,000 points compared across backends, and failures. The
campaign is applied once (not timed here: bench/scale.py times apply); then, alternating
and as fresh subprocesses:

  qrun:  `qrun report M -o report.html`.
  peer:  `qrun export M -f jsonl` then a pandas + matplotlib script that draws the same
         figures (12 histograms, 2 x 3 sweep panels with a line per backend, 6 grouped bar
         charts of the worst points), computes the same TVD and Hellinger fidelity per point
         and pair of backends, and writes them as PNGs inlined in one HTML file. There is no
         packaged peer that reads a qrun campaign: this is what its user would write.

The page must also open: headless Chromium renders it to a screenshot (when installed), and
the time that takes is printed. Targets: report <= 10 s for 100,000 experiments (a person
waits for it, as for `qrun export`), the file <= 2 MB (a browser opens it at once), peak
memory <= 300 MB (every command's budget, bench/scale.py).

    .venv/bin/python bench/report.py                        # 100,000 experiments; ~2 min here
    .venv/bin/python bench/report.py --theta 50 --phi 20    # quick check: 2,000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the repository
import _common  # noqa: E402  (bench/_common.py, beside this script)

TIME_TARGET_S = 10.0
SIZE_TARGET_MB = 2.0
MEMORY_TARGET_MB = 300.0

CIRCUIT = """\
OPENQASM 3.0;
include "stdgates.inc";
input float theta;
input float phi;
qubit[2] q;
bit[2] c;
rx(theta) q[0];
ry(phi) q[1];
cx q[0], q[1];
c = measure q;
"""

# The peer: what a user writes to get the same page from `qrun export`'s JSON Lines.
PEER = r'''
import base64, io, json, sys
import numpy as np
import pandas as pd
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows, out = sys.argv[1], sys.argv[2]
df = pd.read_json(rows, lines=True)
done = df[df.state == "done"].copy()
params = pd.json_normalize(done["params"]).set_index(done.index)
done = done.join(params)
done["total"] = done["counts"].map(lambda c: sum(c.values()))
figures, tables = [], []

def png(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()

# Histograms: the first 6 experiments of each backend, top 8 outcomes, the rest grouped.
for backend, group in done.groupby("backend"):
    for _, row in group.head(6).iterrows():
        counts = sorted(row["counts"].items(), key=lambda kv: -kv[1])
        top, rest = counts[:8], sum(v for _, v in counts[8:])
        labels = sorted(k for k, _ in top) + (["other"] if rest else [])
        values = [row["counts"][k] / row["total"] for k in labels if k != "other"] + ([rest / row["total"]] if rest else [])
        fig, ax = plt.subplots(figsize=(3.6, 2.2))
        ax.bar(labels, values)
        ax.set_title(f"{row['circuit']} on {backend}")
        figures.append(png(fig))

# Sweeps: the 3 leading outcomes (mass over all runs) against each parameter, a line per backend.
outcomes = pd.DataFrame([(i, k, v / t) for i, c, t in zip(done.index, done["counts"], done["total"])
                         for k, v in c.items()], columns=["row", "outcome", "p"])
leading = outcomes.groupby("outcome")["p"].sum().nlargest(3).index
wide = outcomes[outcomes.outcome.isin(leading)].pivot_table(index="row", columns="outcome", values="p", fill_value=0)
wide = done[["backend", *params.columns]].join(wide).fillna(0)
for parameter in params.columns:
    means = wide.groupby(["backend", parameter])[list(leading)].mean()
    for outcome in leading:
        fig, ax = plt.subplots(figsize=(3.6, 2.4))
        for backend, series in means[outcome].groupby(level=0):
            ax.plot(series.index.get_level_values(1), series.values, label=backend)
        ax.set_xlabel(parameter); ax.set_ylabel(f"P({outcome})"); ax.legend()
        figures.append(png(fig))

# Backends compared: TVD and Hellinger fidelity per point and pair.
key = done["params"].map(lambda p: json.dumps(p, sort_keys=True))
done["point"] = done["circuit"] + "|" + key
pairs = []
for point, group in done.groupby("point"):
    dists = [(b, {k: v / t for k, v in c.items()}) for b, c, t in zip(group.backend, group.counts, group.total)]
    for i in range(len(dists)):
        for j in range(i + 1, len(dists)):
            (a, p), (b, q) = dists[i], dists[j]
            keys = set(p) | set(q)
            tvd = 0.5 * sum(abs(p.get(k, 0) - q.get(k, 0)) for k in keys)
            fid = sum(np.sqrt(p.get(k, 0) * q.get(k, 0)) for k in keys) ** 2
            pairs.append((point, a, b, tvd, fid))
pairs = pd.DataFrame(pairs, columns=["point", "a", "b", "tvd", "fidelity"])
summary = pairs.groupby(["a", "b"]).agg(points=("tvd", "size"), mean_tvd=("tvd", "mean"), max_tvd=("tvd", "max"),
                                        mean_f=("fidelity", "mean"), min_f=("fidelity", "min"))
tables.append(summary.to_html())
worst = pairs.nlargest(20, "tvd")
tables.append(worst.to_html())
for point in pairs.groupby("point")["tvd"].max().nlargest(6).index:
    group = done[done.point == point]
    labels = sorted({k for c in group.counts for k in c})
    fig, ax = plt.subplots(figsize=(4.5, 2.4))
    width = 0.8 / len(group)
    for n, (b, c, t) in enumerate(zip(group.backend, group.counts, group.total)):
        ax.bar(np.arange(len(labels)) + n * width, [c.get(k, 0) / t for k in labels], width, label=b)
    ax.set_xticks(np.arange(len(labels)), labels); ax.legend()
    figures.append(png(fig))

failed = df[df.state == "failed"]
tables.append(failed.groupby(["backend", "error"]).size().to_frame("experiments").to_html())
with open(out, "w") as handle:
    handle.write("<html><body>" + "".join(tables)
                 + "".join(f'<img src="data:image/png;base64,{f}">' for f in figures) + "</body></html>")
'''


def write_campaign(folder: Path, theta: int, phi: int) -> Path:
    (folder / "circuits").mkdir(parents=True, exist_ok=True)
    (folder / "circuits" / "rot2.qasm").write_text(CIRCUIT)
    manifest = folder / "report-bench.yaml"
    manifest.write_text("\n".join([
        "apiVersion: qrun/v1",
        "kind: Campaign",
        "metadata: {name: report-bench}",
        "spec:",
        "  shots: 100",
        "  seed: 11",
        "  circuits:",
        "    - name: rot2",
        "      source: circuits/rot2.qasm",
        f"      sweep: {{theta: {{linspace: [0, 3.14159, {theta}]}}, phi: {{linspace: [0, 3.14159, {phi}]}}}}",
        "  backends:",
        "    - {name: aer, provider: qiskit.aer}",
        "    - {name: aer-sv, provider: qiskit.aer, device: statevector}",
        "  split: {max_experiments_per_job: 250}",
    ]) + "\n")
    return manifest


def render_in_chromium(page: Path, png: Path) -> float | None:
    """Seconds headless Chromium takes to open the page and screenshot it; None without it."""
    chromium = shutil.which("chromium")
    if not chromium:
        return None
    profile = tempfile.mkdtemp(prefix="qrun-bench-chromium-")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1300,4000"]
    started = time.perf_counter()
    process = subprocess.Popen([chromium, *flags, page.as_uri()], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout=120)
    finally:
        try:
            os.killpg(process.pid, 9)
        except ProcessLookupError:
            pass
        process.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return round(time.perf_counter() - started, 2) if png.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--theta", type=int, default=250, help="theta values (grid rows)")
    parser.add_argument("--phi", type=int, default=200, help="phi values (grid columns)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of both sides (medians)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    experiments = args.theta * args.phi * 2
    root = _common.scratch("report")
    env = _common.clean_env(root, QRUN_STATE_DIR=str(root / "state"))
    manifest = write_campaign(root, args.theta, args.phi)
    qrun = _common.qrun_command()
    print(f"applying {experiments:,} experiments (not timed) ...", flush=True)
    applied = _common.measured([*qrun, "apply", str(manifest), "--no-progress"], {
        **env, "QRUN_FAULTS": "permanent=0.01,seed=2"}, root, check=False)
    print(f"  applied in {applied.wall_s:.1f} s")

    page, peer_page, rows = root / "report.html", root / "peer.html", root / "rows.jsonl"
    (root / "peer.py").write_text(PEER)
    ours: list = []
    peer: list = []
    peer_script: list = []

    def qrun_side(_round: int) -> None:
        ours.append(_common.measured([*qrun, "report", str(manifest), "-o", str(page)], env, root))

    def peer_side(_round: int) -> None:
        exported = _common.measured([*qrun, "export", str(manifest), "-f", "jsonl", "-o", str(rows)], env, root)
        drawn = _common.measured([sys.executable, str(root / "peer.py"), str(rows), str(peer_page)], env, root)
        peer.append(exported.wall_s + drawn.wall_s)
        peer_script.append(drawn)

    def after(round_: int) -> None:
        print(f"  round {round_ + 1}: qrun report {ours[-1].wall_s:.2f} s, peer {peer[-1]:.2f} s "
              f"(pandas+matplotlib {peer_script[-1].wall_s:.2f} s)", flush=True)

    _common.alternating_rounds(qrun_side, peer_side, args.repeats, budget=900, after_round=after)
    chromium_s = render_in_chromium(page, root / "report.png")
    figures = {
        "benchmark": "report", "experiments": experiments, **_common.machine(),
        "load_average": _common.load_average(), **_common.qrun_origin(env, root),
        "report_s": round(_common.median([m.wall_s for m in ours]), 2),
        "report_peak_mb": round(max(m.peak_mb for m in ours), 1),
        "report_mb": round(page.stat().st_size / 1e6, 3),
        "peer_s": round(_common.median(peer), 2),
        "peer_pandas_matplotlib_s": round(_common.median([m.wall_s for m in peer_script]), 2),
        "peer_peak_mb": round(max(m.peak_mb for m in peer_script), 1),
        "peer_mb": round(peer_page.stat().st_size / 1e6, 3),
        "chromium_screenshot_s": chromium_s,
        "targets": {"report_s": TIME_TARGET_S, "report_mb": SIZE_TARGET_MB, "peak_mb": MEMORY_TARGET_MB},
    }
    print(f"qrun report: {figures['report_s']} s (median), peak {figures['report_peak_mb']} MB, "
          f"file {figures['report_mb']} MB; targets {TIME_TARGET_S:g} s, {SIZE_TARGET_MB:g} MB, "
          f"{MEMORY_TARGET_MB:g} MB")
    print(f"peer (qrun export + pandas/matplotlib): {figures['peer_s']} s, of which the script "
          f"{figures['peer_pandas_matplotlib_s']} s, peak {figures['peer_peak_mb']} MB, file {figures['peer_mb']} MB")
    print(f"Chromium opened and drew the page in {chromium_s} s" if chromium_s else
          "Chromium not installed: the page was not rendered")
    _common.finish(root, figures, args.keep)


if __name__ == "__main__":
    main()
