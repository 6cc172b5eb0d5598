"""`qrun report`: one self-contained HTML page, checked as a person sees it.

The distances are checked against hand-computed values and Qiskit's hellinger_fidelity; the
page's escaping and its bounds at scale on synthetic rows; and a real campaign (two Aer
backends, a sweep, injected failures) is rendered by headless Chromium: the screenshot must
show the bars and lines in the backends' colours, and the rendered DOM the numbers.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from qrun import distances, report
from qrun.store import BackendSummary, Failure, FailureCause

from .conftest import qrun, write

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


# ---------------------------------------------------------------- distances

def test_distances_match_hand_computed_values():
    half, three_quarters = {"0": 50, "1": 50}, {"0": 3, "1": 1}
    assert distances.total_variation(half, three_quarters) == pytest.approx(0.25)
    # (√(.5 × .75) + √(.5 × .25))² = (0.6123724 + 0.3535534)² = 0.9330127
    assert distances.hellinger_fidelity(half, three_quarters) == pytest.approx(0.9330127, abs=1e-7)
    assert distances.total_variation({"00": 7}, {"11": 2}) == 1.0
    assert distances.hellinger_fidelity({"00": 7}, {"11": 2}) == 0.0
    assert distances.total_variation({"a": 1, "b": 3}, {"b": 30, "a": 10}) == pytest.approx(0.0)
    assert distances.hellinger_fidelity({"a": 1, "b": 3}, {"b": 30, "a": 10}) == pytest.approx(1.0)
    # Outcomes only one side has: p = (.5, .5, 0), q = (0, .5, .5): TVD .5, F = .25
    assert distances.total_variation({"x": 1, "y": 1}, {"y": 1, "z": 1}) == pytest.approx(0.5)
    assert distances.hellinger_fidelity({"x": 1, "y": 1}, {"y": 1, "z": 1}) == pytest.approx(0.25)


def test_hellinger_fidelity_agrees_with_qiskit_on_random_counts():
    from qiskit.quantum_info import hellinger_fidelity

    rng = random.Random(11)
    outcomes = [format(i, "03b") for i in range(8)]
    for _ in range(200):
        p = {o: rng.randint(1, 500) for o in rng.sample(outcomes, rng.randint(1, 8))}
        q = {o: rng.randint(1, 500) for o in rng.sample(outcomes, rng.randint(1, 8))}
        assert distances.hellinger_fidelity(p, q) == pytest.approx(hellinger_fidelity(p, q), abs=1e-12)


# ---------------------------------------------------------------- the page, from synthetic rows

@dataclass(frozen=True)
class Point:
    circuit: str
    backend: str
    params: str
    shots: int
    counts: dict


def facts(**overrides) -> report.Facts:
    values = dict(campaign="demo", state_path="/tmp/demo.sqlite", qrun_version="0.1.0",
                  states={"pending": 0, "done": 2, "failed": 0}, last_apply=None,
                  manifest_sha256="ab" * 32, backends=[], provenance=[], remote_jobs=[],
                  remote_job_count=0, failure_causes=[], failures=[], pending_causes=[])
    values.update(overrides)
    return report.Facts(**values)


def test_text_from_the_data_is_escaped_everywhere():
    hostile = '<script>alert("x")</script>'
    outcome = '<img src=x onerror=alert(1)>'
    points = [Point(hostile, "b&<1>", json.dumps({hostile: 0.5}), 10, {outcome: 6, "0": 4}),
              Point(hostile, "b2", json.dumps({hostile: 0.5}), 10, {outcome: 5, "0": 5}),
              Point(hostile, "b&<1>", json.dumps({hostile: 1.5}), 10, {outcome: 1, "0": 9})]
    page = report.render(report.build(
        facts(campaign=hostile, states={"pending": 0, "done": 3, "failed": 1},
              backends=[BackendSummary(backend="b&<1>", provider="p", circuit=hostile, done=2, failed=1),
                        BackendSummary(backend="b2", provider="p", circuit=hostile, done=1)],
              failure_causes=[FailureCause(backend="b2", error=f"</td></table>{hostile}", experiments=1)],
              failures=[Failure(circuit=hostile, backend="b2", params={hostile: 2}, error=outcome)]),
        points, {hostile: [outcome, "0"]}))
    assert "<script" not in page and "<img" not in page and "b&<1>" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "b&amp;&lt;1&gt;" in page
    # Offline: nothing is loaded from anywhere, no script runs.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page and "url(" not in page


def test_a_large_campaign_stays_small_and_says_what_it_left_out():
    """20,000 sweep points on 2 backends, 16 outcomes each: capped histograms, binned sweep
    lines, comparisons summarised, in seconds."""
    rng = random.Random(3)
    outcomes = [format(i, "04b") for i in range(16)]
    points = []
    for i in range(20_000):
        params = json.dumps({"theta": i / 1000, "phi": i % 7})
        for backend in ("a", "b"):
            points.append(Point("c", backend, params, 100, {o: rng.randint(1, 20) for o in outcomes}))
    points.sort(key=lambda p: (p.circuit, p.params, p.backend))
    started = time.perf_counter()
    built = report.build(facts(states={"pending": 0, "done": 40_000, "failed": 0}), points,
                         {"c": outcomes[:3]})
    page = report.render(built)
    elapsed = time.perf_counter() - started
    assert elapsed < 20, elapsed
    assert len(page) < 600_000, len(page)
    assert len(built.histograms) == report.HISTOGRAMS_SHOWN
    assert sum(h.backend == "a" for h in built.histograms) == report.HISTOGRAMS_SHOWN // 2  # in turn
    assert built.experiments_done == 40_000 and built.compared_points == 20_000
    assert [p.points for p in built.pairs] == [20_000]
    assert len(built.compared) == report.COMPARISON_FIGURES
    assert len(built.disagreements) == report.COMPARISON_ROWS
    assert built.disagreements[0].tvd == max(d.tvd for d in built.disagreements)
    for line in re.findall(r'<polyline points="([^"]*)"', page):
        assert len(line.split()) <= report.SWEEP_POINTS_DRAWN
    left_out = " ".join(built.left_out)
    assert f"{report.HISTOGRAMS_SHOWN} of 40,000 done experiments" in left_out
    assert f"20,000 values, drawn as {report.SWEEP_POINTS_DRAWN} equal-width bins" in left_out
    assert "other (8)" in page  # 16 outcomes: 8 drawn, 8 grouped


def test_sweep_values_are_averaged_over_the_other_parameters():
    points = [Point("c", "a", json.dumps({"phi": phi, "theta": theta}), 4,
                    {"1": ones, "0": 4 - ones})
              for theta, phi, ones in ((0.0, 0, 0), (0.0, 1, 2), (1.0, 0, 4), (1.0, 1, 4))]
    built = report.build(facts(), points, {"c": ["1", "0"]})
    theta = next(s for s in built.sweeps if s.parameter == "theta")
    assert theta.sums["a"][0.0] == [0.5, 1.5, 2]  # P(1) = 0 and .5, P(0) = 1 and .5, 2 points
    assert theta.sums["a"][1.0] == [2.0, 0.0, 2]
    assert theta.others_averaged()


# ---------------------------------------------------------------- a real campaign, in Chromium

def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed, and CI must render the report (.ci/run installs it)")
    pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs and runs it")


def run_chromium(*args: str, timeout: float = 90) -> str:
    """Headless Chromium in its own process group and profile, killed whole afterwards."""
    profile = tempfile.mkdtemp(prefix="qrun-test-chromium-")
    process = subprocess.Popen([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its zygote and helpers too
        except ProcessLookupError:
            pass
        process.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return out


def screenshot(page: Path, png: Path, size: str = "1300,3600"):
    from PIL import Image

    run_chromium(f"--screenshot={png}", f"--window-size={size}", page.as_uri())
    with Image.open(png) as image:
        return image.convert("RGB")


def pixels_of(image, colour: str, tolerance: int = 4) -> int:
    """How many pixels have this colour (bar and line interiors are drawn exactly in it)."""
    target = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    r, g, b = image.split()
    masks = [channel.point(lambda v, t=t: 255 if abs(v - t) <= tolerance else 0)
             for channel, t in zip((r, g, b), target)]
    from PIL import ImageChops

    both = ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2])
    return both.histogram()[255]


def only_section(page: Path, section: str, folder: Path) -> Path:
    """A copy of the page showing one section alone (to look at its figures by themselves)."""
    text = page.read_text(encoding="utf-8")
    hide = f"<style>section:not(#{section}) {{ display: none; }}</style></head>"
    copy = folder / f"only-{section}.html"
    copy.write_text(text.replace("</head>", hide, 1), encoding="utf-8")
    return copy


MANIFEST = """\
apiVersion: qrun/v1
kind: Campaign
metadata: {name: report-demo}
spec:
  shots: 400
  seed: 5
  circuits:
    - {name: ghz, source: circuits/ghz.qasm}
    - name: rot
      source: circuits/rot.qasm
      sweep: {theta: {linspace: [0, 3.14159, 7]}}
  backends:
    - {name: aer, provider: qiskit.aer}
    - {name: dm, provider: qiskit.aer, device: density_matrix}
"""


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """The campaign applied (with some experiments failing by injected fault), exported and
    reported through the CLI, as a user runs them."""
    from .conftest import GHZ2, ROT3

    folder = tmp_path_factory.mktemp("report")
    write(folder, "circuits/ghz.qasm", GHZ2)
    write(folder, "circuits/rot.qasm", ROT3)
    manifest = write(folder, "campaign.yaml", MANIFEST)
    env = {"QRUN_STATE_DIR": str(folder / "state")}
    applied = qrun("apply", manifest, "--no-progress", env={**env, "QRUN_FAULTS": "permanent=0.2,seed=3"})
    assert applied.returncode == 1, applied.stderr  # some failed, as asked
    exported = qrun("export", manifest, "-o", folder / "results.jsonl", env=env)
    assert exported.returncode == 0, exported.stderr
    made = qrun("report", manifest, "-o", folder / "report.html", env=env)
    assert made.returncode == 0, made.stderr
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return folder, folder / "report.html", rows


def test_report_command_refuses_a_campaign_never_applied(project):
    manifest = write(project, "fresh.yaml", MANIFEST.replace("report-demo", "never-applied"))
    done = qrun("report", manifest, "-o", project / "r.html")
    assert done.returncode == 2 and "run qrun apply first" in done.stderr
    assert "Traceback" not in done.stderr and not (project / "r.html").exists()


def test_the_page_shows_its_figures_and_numbers_in_chromium(campaign):
    from qiskit.quantum_info import hellinger_fidelity

    folder, page, rows = campaign
    done = [r for r in rows if r["state"] == "done"]
    failed = [r for r in rows if r["state"] == "failed"]
    assert done and failed  # the fault seed gives both
    colours = {"aer": report.PALETTE[0], "dm": report.PALETTE[1]}  # sorted backend names

    # The numbers, from the page as Chromium built it, against an independent computation.
    dom = run_chromium("--dump-dom", page.as_uri())
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert "report-demo" in text and f"{len(rows):,} experiments" in text
    assert re.search(rf"{len(failed)} failed", text)
    applied_sha = rows[0]["manifest_sha256"]
    assert applied_sha in text
    for backend, version in (("aer", "qiskit-aer 0.18"),):
        assert backend in text and version in text
    by_point: dict = {}
    for row in done:
        by_point.setdefault((row["circuit"], json.dumps(row["params"], sort_keys=True)), {})[row["backend"]] = row["counts"]
    pairs = [(c, counts) for (c, _), counts in by_point.items() if len(counts) == 2]
    assert pairs, "no sweep point done on both backends"
    for circuit, counts in pairs:
        p, q = counts["aer"], counts["dm"]
        # The worst-pairs table lists up to 20 pairs: every pair of this small campaign.
        keys = set(p) | set(q)
        tvd = 0.5 * sum(abs(p.get(k, 0) / sum(p.values()) - q.get(k, 0) / sum(q.values())) for k in keys)
        assert f"{tvd:.4f} {hellinger_fidelity(p, q):.4f}" in text, (circuit, p, q)
    for row in failed:
        assert row["error"].split(":")[0] in text
    assert "Sweeps" in text and "P( 1 )" in text  # a panel title, P(<span>1</span>)

    # The pictures: each section alone, in Chromium; its bars or lines in each backend's colour.
    shots = {}
    for section in ("histograms", "sweeps", "comparisons"):
        image = screenshot(only_section(page, section, folder), folder / f"{section}.png")
        shots[section] = {name: pixels_of(image, colour) for name, colour in colours.items()}
    histogram_bars = sum(1 for r in done)  # at least one bar per histogram drawn
    for name in colours:
        assert shots["histograms"][name] > 400 * histogram_bars / 2, shots
        assert shots["sweeps"][name] > 300, shots  # two lines per panel of 2.2 px over ~260 px
        assert shots["comparisons"][name] > 1000, shots
    whole = screenshot(page, folder / "report.png")
    assert pixels_of(whole, colours["aer"]) >= shots["histograms"]["aer"]
    keep = os.environ.get("QRUN_REPORT_SCREENSHOT")
    if keep:  # a copy for people to look at
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / "report.png", keep)


def test_the_same_page_without_its_figures_fails_the_pixel_check(campaign):
    """The pixel check can fail: the page with its SVG removed shows no backend colour."""
    folder, page, _ = campaign
    broken = folder / "broken.html"
    broken.write_text(re.sub(r"<svg.*?</svg>", "", page.read_text(encoding="utf-8"), flags=re.S),
                      encoding="utf-8")
    image = screenshot(only_section(broken, "histograms", folder), folder / "broken.png")
    assert pixels_of(image, report.PALETTE[0]) < 200  # the legend chips' few pixels at most
