"""What a campaign costs: prices, estimates and budgets.

A backend's price comes, first found, from the manifest's ``pricing:`` for that backend,
from being free (a local simulator, or a rehearsal against a fake service on this machine),
or from its provider's price table (``prices.json`` in the provider's folder: per device,
per task, per shot, per second, with its source and date). With none of these the price is
unknown, and so is every estimate that needs it: an unknown price is never taken as 0.

What work costs is counted in tasks (one per job sent: a Braket quantum task, an IBM job,
a Pasqal batch, a Quandela job) and shots. Time the provider meters (per-second prices)
cannot be known before the work runs: such an estimate is unknown too, and says why.

A budget (``spec.budget``) bounds the campaign's total and, optionally, each backend's
share. What counts against it is every submission the provider may have accepted (its
tag not known to be absent), failed ones included, since providers differ in what they
bill for a failed task: qrun errs on the side of the budget.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import urllib.parse
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from qrun.errors import EXIT_OVER_BUDGET, QrunError
from qrun.providers import PROVIDERS

CURRENCY = "USD"


class BudgetExceeded(QrunError):
    """Work whose estimate passes what is left of the budget, or cannot be estimated."""

    exit_code = EXIT_OVER_BUDGET


@dataclass(frozen=True)
class Price:
    per_task: float = 0.0
    per_shot: float = 0.0
    per_second: float | None = None  # metered time: an estimate needs the run time
    currency: str = CURRENCY
    source: str = ""  # where the figures come from, as shown to users

    @classmethod
    def from_entry(cls, entry: dict, currency: str, source: str) -> Price:
        """A price from its written form: a price table's entry or a manifest's pricing:."""
        return cls(per_task=entry.get("per_task", 0.0), per_shot=entry.get("per_shot", 0.0),
                   per_second=entry.get("per_second"), currency=currency, source=source)

    def cost(self, work: Work) -> float | None:
        """What the work costs; None when it cannot be known before it runs."""
        if not work.tasks and not work.shots:
            return 0.0
        if self.per_second:
            return None
        return work.tasks * self.per_task + work.shots * self.per_shot

    def cost_of_usage(self, tasks: int | None, shots: int | None, seconds: float | None) -> float | None:
        """What the usage a provider reported costs; None when a figure the price needs is
        unknown (never a guess: unknown stays unknown)."""
        if self.per_second:
            return None if seconds is None else seconds * self.per_second
        if (self.per_task and tasks is None) or (self.per_shot and shots is None):
            return None
        return self.cost(Work(tasks or 0, shots or 0))


FREE_LOCAL = Price(source="local simulator")
FREE_REHEARSAL = Price(source="rehearsal: a fake service on this machine")


@dataclass
class Work:
    """Tasks (jobs sent) and shots."""

    tasks: int = 0
    shots: int = 0

    def add(self, tasks: int, shots: int) -> None:
        self.tasks += tasks
        self.shots += shots


def work_by_backend(rows) -> dict[str, Work]:
    """The store's per-backend rows of work (store.reports.BackendWork) as Work."""
    return {row.backend: Work(row.tasks, row.shots) for row in rows}


# ---------------------------------------------------------------- prices


def price_of(backend) -> Price | None:
    """The price of a manifest backend (manifest.BackendSpec); None: unknown."""
    if backend.pricing is not None:
        return backend.pricing
    spec = PROVIDERS[backend.provider]
    if spec.local:
        return FREE_LOCAL
    if _on_this_machine(backend.options.get("endpoint")):
        return FREE_REHEARSAL
    return table_price(backend.provider, backend.device)


def _on_this_machine(endpoint) -> bool:
    if not isinstance(endpoint, str) or not endpoint:
        return False
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def table_price(provider: str, device: str) -> Price | None:
    """The provider's price table entry for the device (glob patterns, first match)."""
    table = price_table(provider)
    for entry in table.get("devices", ()):
        if fnmatch.fnmatchcase(device, entry["device"]):
            return Price.from_entry(entry, table.get("currency", CURRENCY),
                                    f"{entry.get('name', device)}, {table['source']} {table['as_of']}")
    return None


@cache
def price_table(provider: str) -> dict:
    """The provider's shipped price table (``prices.json`` beside its spec), or {}."""
    package = PROVIDERS[provider].adapter.rpartition(".")[0]
    try:
        text = (resources.files(package) / "prices.json").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError):
        return {}
    try:
        table = json.loads(text)
        for entry in table.get("devices", ()):
            str(entry["device"])
        if table.get("devices") and not (table.get("source") and table.get("as_of")):
            raise KeyError("source and as_of")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # A plugin's table is its author's input: say which file, never a traceback.
        raise QrunError(f"{provider}: its price table {package}/prices.json is not readable "
                        f"({type(exc).__name__}: {exc}); see docs/providers.md") from None
    return table


# ---------------------------------------------------------------- estimates


@dataclass
class BackendCost:
    backend: str
    price: Price | None
    work: Work = field(default_factory=Work)  # what would run
    spent_work: Work = field(default_factory=Work)  # what was sent already

    @property
    def cost(self) -> float | None:
        return None if self.price is None else self.price.cost(self.work)

    @property
    def spent(self) -> float | None:
        return None if self.price is None else self.price.cost(self.spent_work)

    @property
    def why_unknown(self) -> str:
        if self.price is None:
            return "no price known: give `pricing:` for this backend in the manifest"
        return (f"billed per second of metered time ({self.price.per_second:g} "
                f"{self.price.currency}/s), not known before it runs: give `pricing:` per task "
                "or shot for this backend to estimate it")

    def as_dict(self) -> dict:
        price = self.price
        return {"backend": self.backend, "tasks": self.work.tasks, "shots": self.work.shots,
                "cost": _rounded(self.cost), "spent": _rounded(self.spent),
                "spent_tasks": self.spent_work.tasks, "spent_shots": self.spent_work.shots,
                "currency": price.currency if price else CURRENCY,
                "price": None if price is None else {
                    "per_task": price.per_task, "per_shot": price.per_shot,
                    "per_second": price.per_second, "source": price.source},
                "unknown_because": None if self.cost is not None else self.why_unknown}


@dataclass
class CostEstimate:
    """Per backend: what would run and what it costs, and what was sent already."""

    backends: dict[str, BackendCost]

    @classmethod
    def of(cls, manifest, to_run: dict[str, Work], sent: dict[str, Work]) -> CostEstimate:
        rows = {}
        for name, spec in manifest.backends.items():
            rows[name] = BackendCost(name, price_of(spec), to_run.get(name, Work()),
                                     sent.get(name, Work()))
        return cls(rows)

    @property
    def total(self) -> float | None:
        return _sum(row.cost for row in self.backends.values())

    @property
    def spent(self) -> float | None:
        return _sum(row.spent for row in self.backends.values())

    @property
    def currency(self) -> str:
        return next((r.price.currency for r in self.backends.values() if r.price), CURRENCY)

    def as_dict(self) -> dict:
        return {"currency": self.currency, "total": _rounded(self.total),
                "spent": _rounded(self.spent),
                "backends": [row.as_dict() for row in self.backends.values()]}


def _sum(values) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def money(value: float | None, currency: str = CURRENCY) -> str:
    return "unknown" if value is None else f"{value:,.2f} {currency}"


# ---------------------------------------------------------------- budgets


@dataclass(frozen=True)
class Budget:
    total: float | None = None
    backends: dict = field(default_factory=dict)  # backend name -> its own bound
    currency: str = CURRENCY


def check_budget(budget: Budget | None, estimate: CostEstimate) -> None:
    """Refuse (BudgetExceeded) work the budget cannot pay for, or whose cost is unknown."""
    if budget is None:
        return
    problems: list[str] = []
    bounded = [(name, bound) for name, bound in budget.backends.items()]
    if budget.total is not None:
        bounded.append((None, budget.total))
    for name, bound in bounded:
        rows = [estimate.backends[name]] if name else list(estimate.backends.values())
        where = f"backend {name}'s budget" if name else "the campaign's budget"
        unknown = [r for r in rows if r.cost is None or r.spent is None]
        if unknown:
            problems.extend(f"{r.backend}: the cost of its work is unknown ({r.why_unknown}), "
                            f"so {where} cannot be kept" for r in unknown)
            continue
        spent = sum(r.spent for r in rows)  # type: ignore[misc]
        cost = sum(r.cost for r in rows)  # type: ignore[misc]
        if spent + cost > bound + 1e-9:
            tasks = sum(r.work.tasks for r in rows)
            shots = sum(r.work.shots for r in rows)
            problems.append(
                f"the work to run ({tasks} tasks, {shots} shots) is estimated at "
                f"{money(cost, budget.currency)}, more than is left of {where}: "
                f"{money(max(0.0, bound - spent), budget.currency)} of "
                f"{money(bound, budget.currency)} ({money(spent, budget.currency)} sent already)")
    if problems:
        raise BudgetExceeded("over budget: " + "; ".join(problems) + ". Nothing was submitted.")


class Spending:
    """What an apply may still send (the engine's side of a budget). Before each round of
    starts it reads what the store holds as sent (every begun attempt is recorded before it
    is sent; one refused before any work is known absent and no longer counts); a job is
    sent only if its cost fits what is left, in total and for its backend."""

    def __init__(self, budget: Budget | None, estimate: CostEstimate):
        self.budget = budget
        self.prices = {name: row.price for name, row in estimate.backends.items()}
        self.spent = {name: row.spent or 0.0 for name, row in estimate.backends.items()}

    def refresh(self, sent: dict[str, Work]) -> None:
        for name, price in self.prices.items():
            cost = price.cost(sent.get(name, Work())) if price else None
            self.spent[name] = cost or 0.0

    def refusal(self, backend: str, shots: int) -> str | None:
        """Why a job of ``shots`` may not be sent now (None: it may, and is counted)."""
        budget = self.budget
        own = None if budget is None else budget.backends.get(backend)
        if budget is None or (budget.total is None and own is None):
            return None  # nothing bounds this backend
        price = self.prices.get(backend)
        cost = None if price is None else price.cost(Work(1, shots))
        if cost is None:
            return f"budget: the cost of a job on {backend} is unknown"
        if own is not None and self.spent[backend] + cost > own + 1e-9:
            return (f"budget: backend {backend} has {money(max(0.0, own - self.spent[backend]), budget.currency)} "
                    f"left of {money(own, budget.currency)}, a job costs {money(cost, budget.currency)}")
        total_spent = sum(self.spent.values())
        if budget.total is not None and total_spent + cost > budget.total + 1e-9:
            return (f"budget: {money(max(0.0, budget.total - total_spent), budget.currency)} left of "
                    f"{money(budget.total, budget.currency)}, a job on {backend} costs "
                    f"{money(cost, budget.currency)}")
        self.spent[backend] += cost
        return None
