"""Report stage: a campaign as one self-contained HTML page, for people.

    qrun report campaign.yaml -o report.html

The page opens offline: its styles are inline and its figures are SVG drawn here, in
Python; nothing is fetched, no script runs. It holds the summary and provenance, a
histogram per experiment, the leading outcomes of each sweep against each swept parameter
(one line per backend), the same circuit compared across backends (total variation distance
and Hellinger fidelity), and the failures with their causes.

Results stream by once (store.result_points, ordered by circuit, sweep point and backend)
and are aggregated as they pass, so a campaign of 100,000 experiments costs what one of
1,000 does: histograms are capped, sweeps are binned, comparisons are summarised per pair
of backends, and the page says what it left out. Every text that comes from the user's data
(names, parameters, outcomes, error messages) is escaped.
"""

from __future__ import annotations

import heapq
import html
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import combinations, groupby
from pathlib import Path
from typing import Any

from .distances import hellinger_fidelity, normalised, total_variation
from .errors import QrunError

HISTOGRAMS_SHOWN = 48  # experiments drawn one by one; the rest are counted in "left out"
BARS_PER_HISTOGRAM = 8  # top outcomes drawn; the others share one grey bar
LEADING_OUTCOMES = 3  # outcomes followed across a sweep, per circuit
SWEEP_POINTS_DRAWN = 500  # more distinct values than this are averaged into as many bins
SWEEP_PLOTS_SHOWN = 24  # (circuit, parameter) panels
COMPARISON_FIGURES = 6  # sweep points whose backends disagree the most, drawn side by side
COMPARISON_ROWS = 20  # worst disagreements listed
FAILURES_LISTED = 50
REMOTE_IDS_LISTED = 20

# Okabe and Ito's palette, which stays distinct under the common colour blindnesses; one
# colour per backend throughout the page (sorted names), grey for grouped outcomes.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
           "#F0E442")
OTHER_COLOUR = "#B8B8B8"
INK = "#222222"
MUTED = "#6b6b6b"
GRID = "#e4e4e4"


# ---------------------------------------------------------------- what the page shows

@dataclass(frozen=True)
class Facts:
    """What the store says of the campaign besides its results (gathered by api.report)."""
    campaign: str
    state_path: str
    qrun_version: str
    states: dict  # pending, done, failed -> experiments
    last_apply: dict | None  # the applies row of the plan reported
    manifest_sha256: str  # of the manifest as it is now
    backends: list  # store.BackendSummary rows
    provenance: list  # store.BackendProvenance rows
    remote_jobs: list  # store.RemoteJob rows, the first few
    remote_job_count: int
    failure_causes: list  # store.FailureCause rows
    failures: list  # store.Failure rows, the first few
    pending_causes: list  # store.PendingCause rows
    generated_at: float = field(default_factory=lambda: datetime.now(UTC).timestamp())


@dataclass
class Histogram:
    circuit: str
    backend: str
    params: dict
    shots: int
    bars: list  # (outcome, count) of the most frequent outcomes, in their natural order
    other: int  # counts of the outcomes not drawn
    other_outcomes: int


@dataclass
class PairSummary:
    """Two backends' agreement on one circuit, over the sweep points both ran."""
    circuit: str
    first: str
    second: str
    points: int = 0
    tvd_sum: float = 0.0
    tvd_max: float = 0.0
    fidelity_sum: float = 0.0
    fidelity_min: float = 1.0

    def add(self, tvd: float, fidelity: float) -> None:
        self.points += 1
        self.tvd_sum += tvd
        self.tvd_max = max(self.tvd_max, tvd)
        self.fidelity_sum += fidelity
        self.fidelity_min = min(self.fidelity_min, fidelity)


@dataclass(frozen=True)
class Disagreement:
    circuit: str
    params: dict
    first: str
    second: str
    tvd: float
    fidelity: float


@dataclass
class ComparedPoint:
    """One sweep point of one circuit on several backends, drawn side by side."""
    circuit: str
    params: dict
    worst_tvd: float
    counts: dict  # backend -> counts


@dataclass
class Sweep:
    """A circuit's leading outcomes against one swept parameter: per backend, per value,
    the summed probability of each outcome and the experiments summed (other parameters
    averaged over)."""
    circuit: str
    parameter: str
    outcomes: list
    sums: dict = field(default_factory=dict)  # backend -> value -> [p per outcome..., n]

    def add(self, backend: str, value: float, probabilities: list[float]) -> None:
        acc = self.sums.setdefault(backend, {}).get(value)
        if acc is None:
            self.sums[backend][value] = [*probabilities, 1]
            return
        for i, p in enumerate(probabilities):
            acc[i] += p
        acc[-1] += 1

    def values(self) -> int:
        return len({v for by_value in self.sums.values() for v in by_value})

    def others_averaged(self) -> bool:
        return any(acc[-1] > 1 for by_value in self.sums.values() for acc in by_value.values())


@dataclass
class Report:
    facts: Facts
    experiments_done: int = 0
    shots_done: int = 0
    histograms: list = field(default_factory=list)
    sweeps: list = field(default_factory=list)
    pairs: list = field(default_factory=list)  # PairSummary
    disagreements: list = field(default_factory=list)  # the worst, worst first
    compared: list = field(default_factory=list)  # ComparedPoint, worst first
    compared_points: int = 0  # sweep points that ran on two backends or more
    left_out: list = field(default_factory=list)  # sentences

    @property
    def backend_names(self) -> list[str]:
        names = {row.backend for row in self.facts.backends}
        names.update(h.backend for h in self.histograms)
        return sorted(names)


# ---------------------------------------------------------------- aggregation

class _Collector:
    """Takes the done experiments one at a time, in circuit / sweep point / backend order,
    and keeps only what the page draws."""

    def __init__(self, leading: dict[str, list[str]]):
        self.leading = leading
        self.candidates: dict[tuple[str, str], list[Histogram]] = {}
        self.sweeps: dict[tuple[str, str], Sweep] = {}
        self.skipped_parameters: set[tuple[str, str]] = set()
        self.pairs: dict[tuple[str, str, str], PairSummary] = {}
        self.worst: list = []  # heap of (tvd, n, Disagreement)
        self.compared: list = []  # heap of (tvd, n, ComparedPoint)
        self.compared_points = 0
        self.experiments = 0
        self.shots = 0
        self._serial = 0  # ties in the heaps are broken by arrival, never by comparing rows

    def point(self, circuit: str, params_text: str, results: Sequence[Any]) -> None:
        params = json.loads(params_text)
        for result in results:
            self.experiments += 1
            self.shots += sum(result.counts.values())
            self._keep_histogram(circuit, params, result)
            self._follow_sweep(circuit, params, result)
        self._compare(circuit, params, results)

    def _keep_histogram(self, circuit: str, params: dict, result) -> None:
        kept = self.candidates.setdefault((circuit, result.backend), [])
        if len(kept) >= HISTOGRAMS_SHOWN or not result.counts:
            return
        top = heapq.nlargest(BARS_PER_HISTOGRAM, result.counts.items(), key=lambda kv: (kv[1], kv[0]))
        bars = [(outcome, result.counts[outcome]) for outcome in _display_order([o for o, _ in top])]
        other = sum(result.counts.values()) - sum(count for _, count in bars)
        kept.append(Histogram(circuit, result.backend, params, result.shots, bars, other,
                              len(result.counts) - len(bars)))

    def _follow_sweep(self, circuit: str, params: dict, result) -> None:
        outcomes = self.leading.get(circuit)
        if not params or not outcomes:
            return
        total = sum(result.counts.values())
        if total <= 0:
            return
        probabilities = [result.counts.get(outcome, 0) / total for outcome in outcomes]
        for name, value in params.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                self.skipped_parameters.add((circuit, name))
                continue
            sweep = self.sweeps.get((circuit, name))
            if sweep is None:
                sweep = self.sweeps[circuit, name] = Sweep(circuit, name, list(outcomes))
            sweep.add(result.backend, float(value), probabilities)

    def _compare(self, circuit: str, params: dict, results: Sequence[Any]) -> None:
        ran = [r for r in results if sum(r.counts.values()) > 0]
        if len(ran) < 2:
            return
        self.compared_points += 1
        worst = 0.0
        for first, second in combinations(ran, 2):
            tvd = total_variation(first.counts, second.counts)
            fidelity = hellinger_fidelity(first.counts, second.counts)
            key = (circuit, first.backend, second.backend)
            pair = self.pairs.get(key)
            if pair is None:
                pair = self.pairs[key] = PairSummary(circuit, first.backend, second.backend)
            pair.add(tvd, fidelity)
            self._push(self.worst, COMPARISON_ROWS, tvd,
                       Disagreement, circuit, params, first.backend, second.backend, tvd, fidelity)
            worst = max(worst, tvd)
        self._push(self.compared, COMPARISON_FIGURES, worst,
                   ComparedPoint, circuit, params, worst, {r.backend: r.counts for r in ran})

    def _push(self, heap: list, size: int, score: float, make, *args) -> None:
        """Keep the ``size`` highest scores; ``make(*args)`` builds the row only if it is kept
        (most of 100,000 points are not)."""
        self._serial += 1
        if len(heap) < size:
            heapq.heappush(heap, (score, -self._serial, make(*args)))
        elif score > heap[0][0]:
            heapq.heapreplace(heap, (score, -self._serial, make(*args)))

    def histograms(self) -> list[Histogram]:
        """Up to HISTOGRAMS_SHOWN, taken in turn from each circuit and backend."""
        groups = [self.candidates[key] for key in sorted(self.candidates)]
        chosen: list[Histogram] = []
        for rank in range(HISTOGRAMS_SHOWN):
            for group in groups:
                if rank < len(group) and len(chosen) < HISTOGRAMS_SHOWN:
                    chosen.append(group[rank])
        chosen.sort(key=lambda h: (h.circuit, h.backend))
        return chosen


def build(facts: Facts, points: Iterable[Any], leading: dict[str, list[str]]) -> Report:
    """The report of a campaign from its facts and its done experiments (rows with circuit,
    backend, params as canonical JSON text, shots and counts, ordered by circuit, params and
    backend, as store.result_points gives them); ``leading``: per circuit, the outcomes to
    follow across its sweeps."""
    collector = _Collector(leading)
    for (circuit, params_text), results in groupby(points, key=lambda r: (r.circuit, r.params)):
        collector.point(circuit, params_text, list(results))
    report = Report(facts=facts, experiments_done=collector.experiments, shots_done=collector.shots,
                    histograms=collector.histograms(), compared_points=collector.compared_points)
    report.sweeps = [s for _, s in sorted(collector.sweeps.items()) if s.values() >= 2]
    report.pairs = sorted(collector.pairs.values(), key=lambda p: (p.circuit, p.first, p.second))
    report.disagreements = [row for _, _, row in sorted(collector.worst, reverse=True)]
    report.compared = [row for _, _, row in sorted(collector.compared, reverse=True)]
    report.left_out = _left_out(report, collector)
    report.sweeps = report.sweeps[:SWEEP_PLOTS_SHOWN]
    return report


def _left_out(report: Report, collector: _Collector) -> list[str]:
    notes = []
    shown = len(report.histograms)
    if report.experiments_done > shown:
        notes.append(f"Histograms: {shown:,} of {report.experiments_done:,} done experiments are "
                     "drawn (taken in turn from each circuit on each backend, in sweep order); "
                     "every experiment is in `qrun export`.")
    if any(h.other_outcomes for h in report.histograms):
        notes.append(f"Each histogram draws its {BARS_PER_HISTOGRAM} most frequent outcomes; "
                     "the rest are one grey bar, named with how many outcomes it holds.")
    if len(report.sweeps) > SWEEP_PLOTS_SHOWN:
        notes.append(f"Sweeps: {SWEEP_PLOTS_SHOWN} of {len(report.sweeps)} circuit and parameter "
                     "panels are drawn.")
    binned = [s for s in report.sweeps[:SWEEP_PLOTS_SHOWN] if s.values() > SWEEP_POINTS_DRAWN]
    for sweep in binned:
        notes.append(f"Sweep {sweep.circuit} / {sweep.parameter}: {sweep.values():,} values, drawn "
                     f"as {SWEEP_POINTS_DRAWN} equal-width bins (each the mean of its values).")
    for circuit, name in sorted(collector.skipped_parameters):
        notes.append(f"Sweep {circuit} / {name}: not a number, not plotted.")
    if report.compared_points > len(report.compared):
        notes.append(f"Comparisons: {report.compared_points:,} sweep points ran on two backends or "
                     f"more; all are in the table per pair of backends, the {len(report.compared)} "
                     f"that disagree the most are drawn and the {len(report.disagreements)} worst "
                     "pairs listed.")
    failed = report.facts.states.get("failed", 0)
    if failed > len(report.facts.failures):
        notes.append(f"Failures: the first {len(report.facts.failures)} of {failed:,} failed "
                     "experiments are listed; their causes are counted in full.")
    if report.facts.remote_job_count > len(report.facts.remote_jobs):
        notes.append(f"Remote jobs: {len(report.facts.remote_jobs)} of "
                     f"{report.facts.remote_job_count:,} remote ids are listed (`qrun status`, "
                     "`qrun export` have them all).")
    return notes


# ---------------------------------------------------------------- SVG figures

def _e(value: Any) -> str:
    """Text from the user's data, safe inside HTML and SVG text or attributes."""
    return html.escape(str(value), quote=True)


def _f(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def nice_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """Round tick values spanning [low, high], at most ``most`` + 1 of them."""
    if not high > low:
        return [low]
    raw = (high - low) / most
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    tick = first
    while tick <= high + step * 1e-9:
        ticks.append(0.0 if abs(tick) < step * 1e-9 else tick)
        tick += step
    return ticks


def _tick_text(value: float) -> str:
    return f"{value:.4g}"


# The probability axis' (top, tick step): the smallest top that holds the tallest bar.
_Y_AXES = ((0.05, 0.01), (0.1, 0.02), (0.2, 0.05), (0.3, 0.1), (0.4, 0.1), (0.6, 0.2), (0.8, 0.2),
           (1.0, 0.25))


def _y_scale(top: float) -> float:
    return next((bound for bound, _ in _Y_AXES if top <= bound + 1e-12), 1.0)


def _y_ticks(bound: float) -> list[float]:
    step = next((s for b, s in _Y_AXES if b == bound), bound / 4)
    return [i * step for i in range(int(round(bound / step)) + 1)]


def _display_order(outcomes: list[str]) -> list[str]:
    """Outcomes drawn in their natural order (bit strings as numbers read left to right),
    whichever of them were chosen as the most frequent."""
    return sorted(outcomes, key=lambda o: (len(o), o))


class _Svg:
    """An SVG drawing of fixed size, built as a list of elements."""

    def __init__(self, width: int, height: int, label: str):
        self.width, self.height = width, height
        self.parts = [f'<svg class="fig" width="{width}" height="{height}" '
                      f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">']

    def add(self, element: str) -> None:
        self.parts.append(element)

    def text(self, x: float, y: float, content: str, anchor: str = "middle", size: int = 11,
             colour: str = MUTED, extra: str = "") -> None:
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
                 f'fill="{colour}" {extra}>{_e(content)}</text>')

    def y_axis(self, left: float, right: float, top: float, bottom: float, y_max: float,
               label: str) -> None:
        for tick in _y_ticks(y_max):
            y = bottom - (bottom - top) * tick / y_max
            self.add(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{GRID}" stroke-width="1"/>')
            self.text(left - 4, y + 3.5, _tick_text(tick), anchor="end", size=10)
        self.text(12, (top + bottom) / 2, label, size=10,
                  extra=f'transform="rotate(-90 12 {(top + bottom) / 2:.1f})"')

    def close(self) -> str:
        return "".join(self.parts) + "</svg>"


def histogram_svg(hist: Histogram, colour: str) -> str:
    bars: list[tuple[str, int, str]] = [(o, c, colour) for o, c in hist.bars]
    if hist.other:
        bars.append((f"other ({hist.other_outcomes})", hist.other, OTHER_COLOUR))
    total = sum(c for _, c, _ in bars) or 1
    longest = max(len(o) for o, _, _ in bars)
    slanted = longest * len(bars) > 40  # labels that would collide are slanted
    below = 18 + (min(longest, 18) * 5.2 if slanted else 0)
    width, top, left, right = 300, 16, 40, 8
    height = int(150 + below)
    bottom = height - below
    svg = _Svg(width, height, f"histogram of {hist.circuit} on {hist.backend}")
    y_max = _y_scale(max(c for _, c, _ in bars) / total)
    svg.y_axis(left, width - right, top, bottom, y_max, "probability")
    slot = (width - left - right) / len(bars)
    bar_width = min(44.0, slot * 0.72)
    for i, (outcome, count, fill) in enumerate(bars):
        p = count / total
        x = left + slot * i + (slot - bar_width) / 2
        h = (bottom - top) * min(p, y_max) / y_max
        svg.add(f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{bar_width:.1f}" height="{h:.1f}" '
                f'fill="{fill}"><title>{_e(outcome)}: {count:,} of {total:,} ({p:.4f})</title></rect>')
        if bar_width >= 20:
            svg.text(x + bar_width / 2, bottom - h - 3, "1" if count == total else _f(p, 3), size=9,
                     colour=INK)
        cx = x + bar_width / 2
        label = outcome if len(outcome) <= 18 else outcome[:17] + "…"
        if slanted:
            svg.text(cx + 3, bottom + 11, label, anchor="end", size=10, colour=INK,
                     extra=f'class="mono" transform="rotate(-50 {cx + 3:.1f} {bottom + 11:.1f})"')
        else:
            svg.text(cx, bottom + 13, label, size=10, colour=INK, extra='class="mono"')
    svg.add(f'<line x1="{left}" x2="{width - right}" y1="{bottom:.1f}" y2="{bottom:.1f}" stroke="{INK}"/>')
    return svg.close()


def grouped_bars_svg(point: ComparedPoint, colours: dict[str, str]) -> str:
    """One sweep point on several backends: per outcome, a bar per backend."""
    backends = sorted(point.counts)
    probabilities = {b: normalised(point.counts[b]) for b in backends}
    mass: dict[str, float] = {}
    for dist in probabilities.values():
        for outcome, p in dist.items():
            mass[outcome] = mass.get(outcome, 0.0) + p
    shown = _display_order(heapq.nlargest(BARS_PER_HISTOGRAM, mass, key=lambda o: (mass[o], o)))
    groups = [(o, {b: probabilities[b].get(o, 0.0) for b in backends}) for o in shown]
    if len(mass) > len(shown):
        groups.append((f"other ({len(mass) - len(shown)})",
                       {b: 1.0 - sum(probabilities[b].get(o, 0.0) for o in shown) for b in backends}))
    slots = len(groups) * (len(backends) + 1)
    width, top, left, right, bottom = int(min(600, max(300, 60 + 16 * slots))), 14, 40, 8, 170
    svg = _Svg(width, 196, f"{point.circuit} compared across {', '.join(backends)}")
    y_max = _y_scale(max(max(g.values()) for _, g in groups))
    svg.y_axis(left, width - right, top, bottom, y_max, "probability")
    slot = (width - left - right) / len(groups)
    bar = min(26.0, slot * 0.8 / len(backends))
    for i, (outcome, by_backend) in enumerate(groups):
        start = left + slot * i + (slot - bar * len(backends)) / 2
        for j, backend in enumerate(backends):
            p = max(0.0, by_backend[backend])
            h = (bottom - top) * min(p, y_max) / y_max
            svg.add(f'<rect x="{start + bar * j:.1f}" y="{bottom - h:.1f}" width="{bar - 1:.1f}" '
                    f'height="{h:.1f}" fill="{colours[backend]}"><title>{_e(backend)}, '
                    f'{_e(outcome)}: {p:.4f}</title></rect>')
        label = outcome if len(outcome) <= 14 else outcome[:13] + "…"
        svg.text(left + slot * (i + 0.5), bottom + 14, label, size=10, colour=INK, extra='class="mono"')
    svg.add(f'<line x1="{left}" x2="{width - right}" y1="{bottom}" y2="{bottom}" stroke="{INK}"/>')
    return svg.close()


def _binned(by_value: dict[float, list[float]], bins: int, low: float, high: float) -> list:
    """(x, [mean p per outcome]) points; over ``bins`` distinct values, equal-width bins."""
    if len(by_value) <= bins or not high > low:
        return [(x, [s / acc[-1] for s in acc[:-1]]) for x, acc in sorted(by_value.items())]
    width = (high - low) / bins
    merged: dict[int, list[float]] = {}
    for x, acc in by_value.items():
        index = min(bins - 1, int((x - low) / width))
        slot = merged.setdefault(index, [0.0] * (len(acc) + 1))
        n = acc[-1]
        slot[0] += x * n
        for i, s in enumerate(acc[:-1]):
            slot[i + 1] += s
        slot[-1] += n
    return [(slot[0] / slot[-1], [s / slot[-1] for s in slot[1:-1]])
            for _, slot in sorted(merged.items())]


def sweep_svg(sweep: Sweep, outcome_index: int, colours: dict[str, str]) -> str:
    outcome = sweep.outcomes[outcome_index]
    xs = [x for by_value in sweep.sums.values() for x in by_value]
    low, high = min(xs), max(xs)
    width, height, top, left, right, bottom = 330, 210, 12, 44, 12, 172
    svg = _Svg(width, height, f"P({outcome}) of {sweep.circuit} against {sweep.parameter}")
    svg.y_axis(left, width - right, top, bottom, 1.0, f"P({outcome})")

    def x_of(x: float) -> float:
        return left + (width - left - right) * ((x - low) / (high - low) if high > low else 0.5)

    for tick in nice_ticks(low, high, 4):
        svg.add(f'<line x1="{x_of(tick):.1f}" x2="{x_of(tick):.1f}" y1="{bottom}" y2="{bottom + 4}" '
                f'stroke="{INK}"/>')
        svg.text(x_of(tick), bottom + 15, _tick_text(tick), size=10)
    svg.add(f'<line x1="{left}" x2="{width - right}" y1="{bottom}" y2="{bottom}" stroke="{INK}"/>')
    svg.text((left + width - right) / 2, height - 4, sweep.parameter, size=11, colour=INK,
             extra='class="mono"')
    for rank, backend in enumerate(sorted(sweep.sums)):
        points = _binned(sweep.sums[backend], SWEEP_POINTS_DRAWN, low, high)
        coords = " ".join(f"{x_of(x):.1f},{bottom - (bottom - top) * ps[outcome_index]:.1f}"
                          for x, ps in points)
        colour = colours[backend]
        # Every other backend dashed: backends that agree draw one line over the other.
        dash = ' stroke-dasharray="7 4"' if rank % 2 else ""
        svg.add(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2.2" '
                f'stroke-linejoin="round"{dash}><title>{_e(backend)}</title></polyline>')
        if len(points) <= 40:
            for x, ps in points:
                p = ps[outcome_index]
                svg.add(f'<circle cx="{x_of(x):.1f}" cy="{bottom - (bottom - top) * p:.1f}" r="3" '
                        f'fill="{colour}"><title>{_e(backend)}: {_e(sweep.parameter)} = '
                        f'{x:.6g}, P({_e(outcome)}) = {p:.4f}</title></circle>')
    return svg.close()


# ---------------------------------------------------------------- the page

STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color: #222; background: #f6f6f3; margin: 0; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 2px; letter-spacing: -0.01em; }
h2 { font-size: 18px; margin: 34px 0 8px; padding-bottom: 4px; border-bottom: 2px solid #ddd; }
h3 { font-size: 13px; margin: 0 0 4px; font-weight: 600; }
.sub, .note, figcaption { color: #6b6b6b; }
.note { font-size: 12.5px; margin: 4px 0 10px; max-width: 900px; }
.mono, code, td.mono { font-family: "DejaVu Sans Mono", ui-monospace, Menlo, monospace; font-size: 12px; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 18px 0 4px; }
.tile { background: #fff; border: 1px solid #e2e2dc; border-radius: 8px; padding: 10px 16px; min-width: 104px; }
.tile b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
.tile span { color: #6b6b6b; font-size: 12px; }
.tile.bad b { color: #b3261e; } .tile.ok b { color: #1b7f3b; } .tile.wait b { color: #a15c00; }
table { border-collapse: collapse; background: #fff; border: 1px solid #e2e2dc; margin: 6px 0 12px; }
th, td { padding: 5px 10px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { background: #f0f0ea; font-weight: 600; font-size: 12.5px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { background: none; width: 190px; color: #555; font-weight: 500; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(286px, 1fr)); gap: 12px; }
.grid.wide { display: flex; flex-wrap: wrap; }
svg.fig { max-width: 100%; height: auto; display: block; }
h3.sweep { margin: 18px 0 0; }
figure { margin: 0; background: #fff; border: 1px solid #e2e2dc; border-radius: 8px; padding: 10px 10px 6px; }
figcaption { font-size: 11.5px; margin-top: 2px; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; margin: 6px 0 10px; font-size: 13px; }
.chip { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
.error { color: #8a1c14; white-space: pre-wrap; word-break: break-word; max-width: 640px; }
.warn { background: #fff4e0; border: 1px solid #f0c27a; border-radius: 6px; padding: 8px 12px; }
svg.fig text.mono { font-family: "DejaVu Sans Mono", ui-monospace, monospace; }
ul.left-out li { margin: 3px 0; }
"""


def _params_text(params: dict) -> str:
    return ", ".join(f"{name} = {value:.6g}" if isinstance(value, float) else f"{name} = {value}"
                     for name, value in params.items())


def _time(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _colours(report: Report) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(report.backend_names)}


def _legend(colours: dict[str, str], names: Iterable[str]) -> str:
    return ('<div class="legend">' + "".join(
        f'<span><span class="chip" style="background:{colours[n]}"></span>{_e(n)}</span>'
        for n in names) + "</div>")


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table of already escaped cells; ``numeric`` columns are right-aligned."""
    out = ["<table><tr>", *(f"<th>{h}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _summary(report: Report) -> str:
    states = report.facts.states
    total = sum(states.values())
    circuits = {row.circuit for row in report.facts.backends}
    tiles = [("experiments", f"{total:,}", ""), ("done", f"{states.get('done', 0):,}", "ok"),
             ("failed", f"{states.get('failed', 0):,}", "bad" if states.get("failed") else ""),
             ("pending", f"{states.get('pending', 0):,}", "wait" if states.get("pending") else ""),
             ("shots measured", f"{report.shots_done:,}", ""),
             ("circuits", f"{len(circuits):,}", ""), ("backends", f"{len(report.backend_names):,}", "")]
    return '<div class="tiles">' + "".join(
        f'<div class="tile {cls}"><b>{value}</b><span>{label}</span></div>'
        for label, value, cls in tiles) + "</div>"


def _provenance(report: Report) -> str:
    facts = report.facts
    last = facts.last_apply or {}
    commit = last.get("git_commit")
    dirty = last.get("git_dirty")
    git = "not in a git repository" if not commit else \
        f'<span class="mono">{_e(commit)}</span>' + (" (uncommitted changes)" if dirty else " (clean)" if dirty is not None else "")
    applied_sha = last.get("manifest_sha256")
    sha = f'<span class="mono">{_e(applied_sha or "—")}</span>'
    if applied_sha and applied_sha != facts.manifest_sha256:
        sha += (' <span class="warn">the manifest changed since: now <span class="mono">'
                f"{_e(facts.manifest_sha256[:16])}…</span></span>")
    rows = [("campaign", _e(facts.campaign)), ("state database", f'<span class="mono">{_e(facts.state_path)}</span>'),
            ("last apply", f"{_e(last.get('command', '—'))}, {_time(last.get('started_at'))} to "
                           f"{_time(last.get('finished_at'))}: {_e(last.get('outcome') or 'unfinished')}"
                           f" on {_e(last.get('host', '—'))}"),
            ("manifest SHA-256", sha), ("git commit", git),
            ("qrun", f"{_e(last.get('qrun_version', '—'))} ran it; {_e(facts.qrun_version)} wrote this page")]
    out = ['<table class="kv">', *(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows), "</table>"]
    by_backend: dict[str, list] = {}
    for row in facts.provenance:
        by_backend.setdefault(row.backend, []).append(row)
    states: dict[str, dict[str, int]] = {}
    for row in facts.backends:
        entry = states.setdefault(row.backend, {"provider": row.provider, "done": 0, "failed": 0, "pending": 0})
        for state in ("done", "failed", "pending"):
            entry[state] += row[state]
    remote_by_backend: dict[str, int] = {}
    for job in facts.remote_jobs:
        remote_by_backend[job.backend] = remote_by_backend.get(job.backend, 0) + 1
    colours = _colours(report)
    table_rows = []
    for backend in sorted(states):
        seen = by_backend.get(backend, [])
        devices = ", ".join(sorted({_e(r.device) for r in seen if r.device})) or "—"
        sdks = sorted({f"{name} {version}" for r in seen for name, version in r.sdk.items()})
        table_rows.append((f'<span class="chip" style="background:{colours[backend]}"></span>{_e(backend)}',
                           _e(states[backend]["provider"]), devices,
                           '<span class="mono">' + "<br>".join(_e(s) for s in sdks) + "</span>" if sdks else "—",
                           f"{states[backend]['done']:,}", f"{states[backend]['failed']:,}",
                           f"{states[backend]['pending']:,}"))
    out.append(_table(["backend", "provider", "device", "SDK versions", "done", "failed", "pending"],
                      table_rows, numeric=(4, 5, 6)))
    if facts.remote_jobs:
        out.append(f'<h3>Remote jobs ({facts.remote_job_count:,})</h3>')
        out.append(_table(["job", "backend", "state", "remote id", "provider's state"],
                          [(str(j.job), _e(j.backend), _e(j.state), f'<span class="mono">{_e(j.remote_id)}</span>',
                            _e(j.provider_state or "—")) for j in facts.remote_jobs], numeric=(0,)))
    else:
        out.append('<p class="note">No remote jobs: every experiment ran on a local simulator.</p>')
    return "".join(out)


def _histograms(report: Report, colours: dict[str, str]) -> str:
    if not report.histograms:
        return '<p class="note">No experiment is done yet.</p>'
    figures = []
    for hist in report.histograms:
        params = _params_text(hist.params)
        figures.append(
            f'<figure><h3>{_e(hist.circuit)} <span class="sub">on</span> {_e(hist.backend)}</h3>'
            f'{histogram_svg(hist, colours[hist.backend])}<figcaption>{_e(params) + " · " if params else ""}'
            f"{hist.shots:,} shots</figcaption></figure>")
    note = (f'<p class="note">{len(report.histograms):,} of {report.experiments_done:,} done experiments; '
            "bars are the measured frequencies, hover for counts. Outcomes read index 0 first.</p>")
    return note + '<div class="grid">' + "".join(figures) + "</div>"


def _sweeps(report: Report, colours: dict[str, str]) -> str:
    if not report.sweeps:
        return '<p class="note">No circuit was swept over a numeric parameter.</p>'
    out = ['<p class="note">The probability of each circuit\'s most frequent outcomes (over all its '
           "runs) at each value of a swept parameter; one line per backend.</p>"]
    for sweep in report.sweeps:
        averaged = " (mean over the other swept parameters)" if sweep.others_averaged() else ""
        out.append(f'<h3 class="sweep">{_e(sweep.circuit)}: leading outcomes against <span class="mono">'
                   f'{_e(sweep.parameter)}</span>{averaged}, {sweep.values():,} values</h3>')
        out.append(_legend(colours, sorted(sweep.sums)) + '<div class="grid">')
        out.extend(f'<figure><h3>P(<span class="mono">{_e(outcome)}</span>)</h3>{sweep_svg(sweep, i, colours)}'
                   "</figure>" for i, outcome in enumerate(sweep.outcomes))
        out.append("</div>")
    return "".join(out)


def _comparisons(report: Report, colours: dict[str, str]) -> str:
    if not report.pairs:
        return '<p class="note">No circuit ran on two backends at the same sweep point.</p>'
    out = ['<p class="note">Per sweep point, the two backends\' measured distributions compared: '
           "total variation distance TVD = ½ Σ|p − q| (0: identical, 1: disjoint) and Hellinger "
           "fidelity F = (Σ √(p q))² (1: identical). Finite shots alone give a TVD of order "
           "√(outcomes / shots).</p>",
           _table(["circuit", "backends", "points", "mean TVD", "max TVD", "mean F", "min F"],
                  [(_e(p.circuit), f"{_e(p.first)} · {_e(p.second)}", f"{p.points:,}",
                    _f(p.tvd_sum / p.points, 4), _f(p.tvd_max, 4), _f(p.fidelity_sum / p.points, 4),
                    _f(p.fidelity_min, 4)) for p in report.pairs], numeric=(2, 3, 4, 5, 6))]
    if report.compared:
        out.append("<h3>Where they disagree the most</h3>")
        out.append(_legend(colours, sorted({b for c in report.compared for b in c.counts})))
        out.append('<div class="grid wide">')
        for point in report.compared:
            params = _params_text(point.params)
            out.append(f"<figure><h3>{_e(point.circuit)}{' · ' + _e(params) if params else ''}</h3>"
                       f"{grouped_bars_svg(point, colours)}<figcaption>largest TVD between two of its "
                       f"backends: {_f(point.worst_tvd, 4)}</figcaption></figure>")
        out.append("</div>")
    if report.disagreements:
        out.append("<h3>The worst pairs</h3>")
        out.append(_table(["circuit", "parameters", "backends", "TVD", "F"],
                          [(_e(d.circuit), _e(_params_text(d.params)) or "—", f"{_e(d.first)} · {_e(d.second)}",
                            _f(d.tvd, 4), _f(d.fidelity, 4)) for d in report.disagreements], numeric=(3, 4)))
    return "".join(out)


def _failures(report: Report) -> str:
    facts = report.facts
    if not facts.failure_causes and not facts.pending_causes:
        return '<p class="note">None: no experiment failed, none is pending.</p>'
    out = []
    if facts.failure_causes:
        out.append("<h3>Causes</h3>")
        out.append(_table(["backend", "experiments", "error"],
                          [(_e(c.backend), f"{c.experiments:,}", f'<div class="error">{_e(c.error or "—")}</div>')
                           for c in facts.failure_causes], numeric=(1,)))
        out.append(f"<h3>Failed experiments (first {len(facts.failures)})</h3>")
        out.append(_table(["circuit", "backend", "parameters", "error"],
                          [(_e(f.circuit), _e(f.backend), _e(_params_text(f.params)) or "—",
                            f'<div class="error">{_e(f.error or "—")}</div>') for f in facts.failures]))
        out.append('<p class="note"><code>qrun retry</code> runs the failed experiments again once '
                   "their cause is fixed.</p>")
    if facts.pending_causes:
        out.append("<h3>Pending</h3>")
        out.append(_table(["backend", "job state", "experiments", "why"],
                          [(_e(c.backend), _e(c.job_state), f"{c.experiments:,}",
                            f'<div class="error">{_e(c.reason or "waiting to run")}</div>')
                           for c in facts.pending_causes], numeric=(2,)))
    return "".join(out)


def render(report: Report) -> str:
    """The page, as text."""
    facts = report.facts
    colours = _colours(report)
    failed = facts.states.get("failed", 0)
    sections = [
        ("summary", "Summary", _summary(report)
         + (f'<p class="warn">{failed:,} experiment{"s" if failed != 1 else ""} failed: see '
            '<a href="#failures">Failures</a>.</p>' if failed else "")),
        ("provenance", "Provenance", _provenance(report)),
        ("histograms", "Histograms", _histograms(report, colours)),
        ("sweeps", "Sweeps", _sweeps(report, colours)),
        ("comparisons", "Backends compared", _comparisons(report, colours)),
        ("failures", "Failures and pending work", _failures(report)),
    ]
    if report.left_out:
        sections.append(("left-out", "What this page leaves out",
                         '<ul class="left-out">' + "".join(f"<li>{_e(n)}</li>" for n in report.left_out) + "</ul>"))
    body = "".join(f'<section id="{sid}"><h2>{title}</h2>{content}</section>' for sid, title, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(facts.campaign)} · qrun report</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{STYLE}</style></head><body><main>"
            f'<h1>{_e(facts.campaign)}</h1><div class="sub">qrun report · generated {_time(facts.generated_at)}'
            f" · {sum(facts.states.values()):,} experiments</div>{body}</main></body></html>\n")


def write(text: str, path: str | Path) -> int:
    """Write the page to ``path`` ('-': standard output) whole or not at all; its bytes."""
    data = text.encode("utf-8")
    if str(path) == "-":
        import sys

        sys.stdout.write(text)
        sys.stdout.flush()
        return len(data)
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise QrunError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise QrunError(f"cannot write {target}: {exc.strerror}") from None
    return len(data)

