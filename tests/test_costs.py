"""Cost: prices (the shipped table, the manifest's, free local and rehearsal runs), the plan's
estimate, and budgets that refuse work up front and stop an apply before it passes them."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from qrun import costs, planner
from qrun.errors import EXIT_OVER_BUDGET
from qrun.manifest import load
from qrun.providers import Limits
from qrun.store import read

from . import clouds
from .conftest import qrun, write

FORTE = "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1"
GARNET = "arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet"
SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"


def _manifest(project, backends: str, spec: str = "", shots: int = 100, points: int = 3):
    """A campaign of a fixed circuit and a swept one (1 + points experiments a backend)."""
    lines = ["apiVersion: qrun/v1", "kind: Campaign", "metadata: {name: cost}", "spec:",
             f"  shots: {shots}", *([f"  {spec}"] if spec else []), "  circuits:",
             "    - {name: flip, source: circuits/flip.qasm}",
             f"    - {{name: rot, source: circuits/rot.qasm, sweep: {{theta: {list(range(points))}}}}}",
             "  backends:", backends]
    return write(project, "cost.yaml", "\n".join(lines) + "\n")


def _backend(name: str, provider: str, device: str | None = None, extra: str = "") -> str:
    lines = [f"    - name: {name}", f"      provider: {provider}"]
    if device:
        lines.append(f"      device: {device}")
    if extra:
        lines.append(f"      {extra}")
    return "\n".join(lines)


def _plan_json(manifest, *args):
    planned = qrun("plan", manifest, "-o", "json", *args)
    return planned, json.loads(planned.stdout)


def _cost_of(plan: dict, backend: str) -> dict:
    return next(row for row in plan["cost"]["backends"] if row["backend"] == backend)


# -- prices


def test_the_price_table_gives_qpu_prices_with_their_source():
    forte = costs.table_price("braket.aws", FORTE)
    assert (forte.per_task, forte.per_shot, forte.currency) == (0.30, 0.08, "USD")
    assert "AWS Braket pricing page" in forte.source
    assert costs.table_price("braket.aws", GARNET).per_shot == 0.00145
    assert costs.table_price("braket.aws", SV1).per_second == 0.00125  # metered: not estimable
    assert costs.table_price("braket.aws", "arn:aws:braket:eu-north-1::device/qpu/aqt/Ibex-Q1") is None
    assert costs.table_price("qiskit.ibm", "ibm_torino") is None  # no table: unknown, never 0


def test_every_price_table_entry_is_well_formed():
    table = costs.price_table("braket.aws")
    assert table["source"] and table["url"].startswith("https://") and table["as_of"]
    for entry in table["devices"]:
        assert set(entry) <= {"device", "name", "per_task", "per_shot", "per_second"}, entry
        assert any(k in entry for k in ("per_task", "per_shot", "per_second")), entry
        assert all(entry.get(k, 0) >= 0 for k in ("per_task", "per_shot", "per_second"))


def test_a_price_comes_from_the_manifest_then_free_runs_then_the_table(project):
    manifest = load(_manifest(project, "\n".join([
        _backend("aer", "qiskit.aer"),
        _backend("forte", "braket.aws", FORTE),
        _backend("rehearsal", "braket.aws", FORTE, 'options: {endpoint: "http://127.0.0.1:8999"}'),
        _backend("priced", "braket.aws", FORTE, "pricing: {per_task: 1.5, per_shot: 0.5}"),
        _backend("unknown", "qiskit.ibm", "ibm_torino"),
    ])))
    prices = {name: costs.price_of(spec) for name, spec in manifest.backends.items()}
    assert prices["aer"] == costs.FREE_LOCAL
    assert prices["forte"].per_shot == 0.08
    assert prices["rehearsal"] == costs.FREE_REHEARSAL  # a fake on this machine costs nothing
    assert (prices["priced"].per_task, prices["priced"].per_shot) == (1.5, 0.5)
    assert prices["unknown"] is None


@pytest.mark.parametrize("endpoint, local", [
    ("http://127.0.0.1:1234", True), ("http://localhost/x", True), ("http://[::1]:80", True),
    ("http://127.8.9.10", True), ("https://braket.us-east-1.amazonaws.com", False),
    ("http://10.0.0.1:80", False), ("", False), (None, False), ("not a url", False)])
def test_only_an_endpoint_on_this_machine_is_a_rehearsal(endpoint, local):
    assert costs._on_this_machine(endpoint) is local


# -- counting tasks as the planner cuts jobs


def test_jobs_needed_counts_what_cut_jobs_cuts():
    for count, shots, per_job, shot_cap in itertools.product(
            (0, 1, 2, 7, 25, 26), (1, 99, 100, 101, 1000), (None, 1, 3, 25), (None, 100, 333)):
        limits = Limits(max_experiments_per_job=per_job, max_shots_per_job=shot_cap)
        rows = [("b", f"k{i}", shots) for i in range(count)]
        cut = list(planner.cut_jobs(rows, lambda _, bound=limits: bound))
        assert planner.jobs_needed(count, shots, limits) == len(cut), (count, shots, limits)


# -- the plan's estimate


def test_plan_estimates_tasks_shots_and_cost_per_backend_and_in_total(project):
    manifest = _manifest(project, "\n".join([
        _backend("aer", "qiskit.aer"), _backend("forte", "braket.aws", FORTE),
        _backend("garnet", "braket.aws", GARNET)]), shots=100, points=3)
    planned, plan = _plan_json(manifest)
    assert planned.returncode == 0, planned.stderr
    forte, garnet = _cost_of(plan, "forte"), _cost_of(plan, "garnet")
    # 4 experiments of 100 shots, in one program set task (a QPU takes up to 100 circuits
    # in one, as AWS documents): 1 x 0.30 + 400 x the shot price
    assert (forte["tasks"], forte["shots"]) == (1, 400)
    assert forte["cost"] == pytest.approx(1 * 0.30 + 400 * 0.08)
    assert garnet["cost"] == pytest.approx(1 * 0.30 + 400 * 0.00145)
    assert _cost_of(plan, "aer")["cost"] == 0.0
    assert plan["cost"]["total"] == pytest.approx(forte["cost"] + garnet["cost"])
    assert plan["cost"]["currency"] == "USD" and plan["cost"]["spent"] == 0.0
    shown = qrun("plan", manifest, env={"COLUMNS": "200"}).stdout
    assert "estimated cost" in shown and "32.30 USD" in shown  # forte: 0.30 + 32.00
    assert f"Estimated cost: {plan['cost']['total']:,.2f} USD" in shown


def test_an_unknown_price_stays_unknown_end_to_end(project):
    manifest = _manifest(project, "\n".join([
        _backend("forte", "braket.aws", FORTE), _backend("sv1", "braket.aws", SV1),
        _backend("torino", "qiskit.ibm", "ibm_torino")]))
    planned, plan = _plan_json(manifest)
    assert planned.returncode == 0
    assert plan["cost"]["total"] is None  # never a sum that leaves the unknown out
    sv1, torino = _cost_of(plan, "sv1"), _cost_of(plan, "torino")
    assert sv1["cost"] is None and "per second" in sv1["unknown_because"]
    assert torino["cost"] is None and torino["price"] is None
    assert "pricing:" in torino["unknown_because"]
    shown = qrun("plan", manifest, env={"COLUMNS": "200"}).stdout
    assert "Estimated cost: unknown" in shown and "torino: cost unknown" in shown


def test_manifest_pricing_errors_point_at_the_key(project):
    manifest = _manifest(project, _backend("forte", "braket.aws", FORTE, "pricing: {per_task: -1}"))
    checked = qrun("validate", manifest)
    assert checked.returncode == 2
    assert re.search(r"cost.yaml:\d+: spec.backends\[0\].pricing.per_task: ", checked.stderr), checked.stderr
    manifest = _manifest(project, _backend("forte", "braket.aws", FORTE),
                         spec="budget: {total: 10, backends: {forté: 5}}")
    checked = qrun("validate", manifest)
    assert checked.returncode == 2 and "no backend named 'forté'" in checked.stderr, checked.stderr
    manifest = _manifest(project, _backend("forte", "braket.aws", FORTE),
                         spec="budget: {total: 10, currency: EUR}")
    checked = qrun("validate", manifest)
    assert checked.returncode == 2 and "the budget is in EUR" in checked.stderr, checked.stderr


# -- budgets, on the in-memory cloud (qrun's CLI in this process)


@pytest.fixture
def memory(monkeypatch):
    cloud = clouds.Memory()
    monkeypatch.setenv("COLUMNS", "400")
    yield cloud
    cloud.stop()


def _budgeted(cloud, project, budget: str, per_task: float = 1.0):
    """The memory cloud's campaign (3 experiments, one job each), a task priced per_task."""
    path = cloud.campaign(project, "spend", points=2, extra=f"pricing: {{per_task: {per_task}}}")
    text = re.sub(r"^(\s*)retry:", rf"\1budget: {budget}\n\1retry:", path.read_text(), flags=re.M)
    path.write_text(text)
    return path


def test_a_budget_smaller_than_the_estimate_runs_nothing(memory, project, _state_dir):
    memory.start()
    manifest = _budgeted(memory, project, "2.5")
    planned = memory.run("plan", manifest)
    assert planned.returncode == EXIT_OVER_BUDGET
    assert "over budget" in planned.stderr and "3.00 USD" in planned.stderr, planned.stderr
    applied = memory.run("apply", manifest, "--no-progress")
    assert applied.returncode == EXIT_OVER_BUDGET, applied.stdout + applied.stderr
    assert "Nothing was submitted" in applied.stderr
    assert not memory.accepted()  # not a single job reached the provider
    with read(_state_dir / "spend.sqlite") as state:
        assert {e.state for e in state.experiments()} == {"pending"}  # the plan is kept
        assert not state.attempts()
    # A budget per backend binds as the total does.
    manifest = _budgeted(memory, project, "{total: 100, backends: {sv1: 2}}")
    assert memory.run("apply", manifest, "--no-progress").returncode == EXIT_OVER_BUDGET
    assert not memory.accepted()


def test_a_budget_hit_mid_campaign_leaves_the_rest_pending_and_a_raised_one_finishes(
        memory, project, _state_dir):
    memory.start(fail_jobs=1.0)
    memory.fake.failures_pass = True  # every job fails once sent, as a device fault that may pass
    manifest = _budgeted(memory, project, "4")  # the estimate, 3.00, fits; its retries do not
    applied = memory.run("apply", manifest, "--no-progress")
    assert applied.returncode == 1, applied.stdout + applied.stderr
    assert sum(memory.accepted().values()) == 4  # 3 jobs and one retry: 4.00 of 4.00
    output = applied.stdout + applied.stderr
    assert "budget: 0.00 USD left of 4.00 USD" in output, output
    db = _state_dir / "spend.sqlite"
    assert clouds.experiment_states(db) == {"pending": 3}  # nothing failed for the budget
    _, plan = _plan_json_memory(memory, manifest)
    assert plan["cost"]["spent"] == 4.0
    status = json.loads(memory.run("status", manifest, "-o", "json").stdout)
    assert status["spend"]["total"] == 4.0
    assert status["spend"]["backends"] == [{"backend": "sv1", "tasks": 4, "shots": 4 * 200, "cost": 4.0,
                                           "reported": None}]  # the memory cloud reports nothing
    assert "sent to providers (estimated at the manifest's prices): 4.00 USD" in \
        memory.run("status", manifest).stdout
    memory.set_fault("fail_jobs", 0.0)
    manifest = _budgeted(memory, project, "20")
    finished = memory.run("apply", manifest, "--no-progress")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert clouds.experiment_states(db) == {"done": 3}
    assert sum(memory.accepted().values()) == 7  # the 3 held jobs, sent once each


def _plan_json_memory(cloud, manifest):
    planned = cloud.run("plan", manifest, "-o", "json")
    return planned, json.loads(planned.stdout)


def test_a_budget_with_an_unknown_price_is_refused_before_anything_runs(memory, project):
    memory.start()
    path = memory.campaign(project, "blind", points=2)
    path.write_text(re.sub(r"^(\s*)retry:", r"\1budget: 1000\n\1retry:", path.read_text(), flags=re.M)
                    .replace('endpoint: "http://127.0.0.1:9", ', ""))
    applied = memory.run("apply", path, "--no-progress")
    assert applied.returncode == EXIT_OVER_BUDGET
    assert "per second" in applied.stderr and "cannot be kept" in applied.stderr, applied.stderr
    assert not memory.accepted()


def test_spending_bounds_only_what_the_budget_names():
    one_dollar = costs.Price(per_task=1.0)
    estimate = costs.CostEstimate({
        "priced": costs.BackendCost("priced", one_dollar, spent_work=costs.Work(2, 0)),
        "unpriced": costs.BackendCost("unpriced", None)})
    spending = costs.Spending(costs.Budget(backends={"priced": 3.0}), estimate)
    assert spending.refusal("unpriced", 100) is None  # no bound on it: its price does not matter
    assert spending.refusal("priced", 100) is None  # 2 spent + 1 = 3: fits
    assert "left of 3.00 USD" in spending.refusal("priced", 100)
    spending = costs.Spending(costs.Budget(total=10.0), estimate)
    assert "unknown" in spending.refusal("unpriced", 100)  # a total needs every price
    spending.refresh({"priced": costs.Work(10, 0)})  # what the store says was sent
    assert "0.00 USD left of 10.00 USD" in spending.refusal("priced", 1)


def test_a_broken_price_table_is_a_clear_error(monkeypatch, tmp_path):
    from importlib import resources

    from qrun.errors import QrunError

    costs.price_table.cache_clear()
    broken = tmp_path / "prices.json"
    broken.write_text('{"devices": [{"name": "no device pattern"}]}')
    monkeypatch.setattr(resources, "files", lambda package: tmp_path)
    try:
        with pytest.raises(QrunError, match=r"braket.aws: its price table .*prices.json is not readable"):
            costs.price_table("braket.aws")
    finally:
        monkeypatch.undo()
        costs.price_table.cache_clear()


def test_ibm_jobs_hold_at_most_ten_million_executions(project):
    """A Sampler job takes circuits x shots <= 10 million: 4 experiments of 4 million shots
    make jobs of two (8 million), never three (12 million)."""
    manifest = _manifest(project, _backend("ibm", "qiskit.ibm", "ibm_brisbane",
                                           'options: {endpoint: "http://127.0.0.1:9"}'),
                         shots=4_000_000)
    planned, plan = _plan_json(manifest)
    assert planned.returncode == 0, planned.stderr
    assert (_cost_of(plan, "ibm")["tasks"], _cost_of(plan, "ibm")["shots"]) == (2, 16_000_000)
