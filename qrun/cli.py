"""The `qrun` command: a thin click layer over :mod:`qrun.api`.

Only click is imported at start; the API, rich and every SDK load inside the command that
needs them, so `qrun --help` stays fast. Errors a user can cause are printed as messages
with the documented exit codes, never as tracebacks:
    0 all done · 1 some experiments failed · 2 bad input or usage · 130 interrupted (Ctrl-C)
    · 143 terminated (SIGTERM, handled as Ctrl-C) · 141 output pipe closed by its reader
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time

import click

from .errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OVER_BUDGET,
    EXIT_TERMINATED,
    ManifestError,
    QrunError,
    Terminated,
)

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as the shell reports a tool that SIGPIPE ended

manifest_argument = click.argument("manifest", type=click.Path(dir_okay=False, path_type=str))
state_dir_option = click.option(
    "--state-dir", envvar="QRUN_STATE_DIR", type=click.Path(file_okay=False), default=None,
    help="Folder of state databases [env QRUN_STATE_DIR; default ./runs].")
root_option = click.option(
    "--root", envvar="QRUN_ROOT", type=click.Path(exists=True, file_okay=False), default=None,
    help="Folder the manifest's paths must stay inside [env QRUN_ROOT; default: its git "
         "repository, else the current folder if it holds the manifest, else its folder].")


def reports_errors(command):
    """Turn qrun's errors into messages and exit codes; keep tracebacks for real bugs."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ManifestError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            count = len(exc.problems)
            click.echo(f"{count} problem{'s' if count > 1 else ''} found; nothing was run.", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except QrunError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated) or _terminated.is_set()
            click.echo("terminated" if terminated else "interrupted", err=True)
            sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
        except Exception as exc:
            if os.environ.get("QRUN_DEBUG"):
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc}\n"
                       "This is a bug in qrun; run again with QRUN_DEBUG=1 for a traceback.",
                       err=True)
            sys.exit(EXIT_FAILED)
    return wrapper


def _quiet_broken_pipe():
    """The reader of our output went away (`qrun export -o - | head`): end as a Unix tool
    killed by SIGPIPE would, quietly, with 128 + SIGPIPE. Standard output is pointed at
    /dev/null first, so that Python's flush at exit does not fail on the pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(EXIT_BROKEN_PIPE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qrun")
def main():
    """Declarative, crash-safe batch runs of quantum experiments.

    A YAML manifest describes circuits, backends, shots and sweeps; `qrun apply` runs every
    experiment not done yet, checkpointing each state change, so it can be stopped and
    started again at any time.
    """


@main.command()
@manifest_argument
@state_dir_option
@root_option
@reports_errors
def validate(manifest, state_dir, root):
    """Check a manifest: schema, names, sources, sweeps. Exit 2 on any problem."""
    from . import api, planner

    loaded = api.validate(manifest, root)
    experiments = sum(1 for _ in planner.experiments(loaded))
    click.echo(f"{manifest}: ok: campaign {loaded.name}, {len(loaded.circuits)} circuits, "
               f"{len(loaded.backends)} backends, {experiments} experiments; state in "
               f"{api.state_path(loaded, state_dir)}")


@main.command()
@manifest_argument
@state_dir_option
@root_option
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when there is nothing to do, 2 when there is work to do, 1 on error.")
@click.option("-o", "--output", type=click.Choice(["table", "json", "md"]), default="table",
              help="table; json (documented, with format_version); md: a pull-request comment.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="Also save the plan to this file; `qrun apply FILE` then runs exactly it, "
                   "or refuses if the manifest or the state changed since.")
@reports_errors
def plan(manifest, state_dir, root, detailed_exitcode, output, out_file):
    """Show what apply would run and why (new, changed, resume, retry, failed, cached; and
    what is retired), and what it would cost. Writes nothing to the campaign but --out (the validation caches aside); exit 3 when the
    estimate passes the budget."""
    from . import api

    try:
        report = api.plan(manifest, state_dir, root, keep_run_keys=out_file is not None)
        if out_file is not None:
            from . import planfile

            planfile.write(report, out_file)
    except QrunError as exc:
        if not detailed_exitcode:
            raise
        # Terraform's convention: with --detailed-exitcode, 2 means "changes", so errors are 1.
        _print_error(exc)
        sys.exit(EXIT_FAILED)
    if output == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif output == "md":
        from .planmd import markdown

        click.echo(markdown(report), nl=False)
    else:
        from . import render

        render.plan(report)
    if out_file is not None:
        click.echo(f"plan saved to {out_file}: `qrun apply {out_file}` runs exactly it", err=True)
    if report.over_budget:  # apply would refuse to start: say so as it would
        click.echo(f"error: {report.over_budget}", err=True)
        sys.exit(EXIT_OVER_BUDGET)
    if detailed_exitcode:
        sys.exit(2 if report.has_work else EXIT_OK)


def _print_error(exc: QrunError) -> None:
    if isinstance(exc, ManifestError):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
    else:
        click.echo(f"error: {exc}", err=True)


_terminated = threading.Event()  # a SIGTERM arrived: exit 143, not 130


def _on_sigterm(signum, frame):
    _terminated.set()
    raise Terminated()


def _run(manifest, state_dir, root, run_options, no_progress, retry_failed, resubmit_unresolved=False):
    from . import executors

    signal.signal(signal.SIGTERM, _on_sigterm)  # systemd, CI time-outs, kill: as Ctrl-C
    workers, executor, ray_address = run_options
    choice = executors.ExecutorChoice(kind=executor, workers=workers, ray_address=ray_address)
    # The workers start now, importing their SDKs while the API loads and the manifest is
    # validated (api.apply asks again: a no-op then).
    executors.start_early(choice, manifest)
    from . import api, render

    progress = render.ApplyProgress(enabled=not no_progress)
    started = time.monotonic()
    try:
        report = api.apply(manifest, state_dir, executor=choice, progress=progress,
                           retry_failed=retry_failed, on_planned=progress.start, root=root,
                           resubmit_unresolved=resubmit_unresolved)
    finally:
        progress.stop()
    render.apply_summary(report, time.monotonic() - started)
    if report.interrupted:
        sys.exit(EXIT_TERMINATED if _terminated.is_set() else EXIT_INTERRUPTED)
    sys.exit(EXIT_OK if report.all_done else EXIT_FAILED)


def executor_options(command):
    """-j, --executor and --ray-address, passed to the command as one `run_options` tuple."""
    options = [
        click.option("-j", "--workers", type=click.IntRange(min=1), default=None,
                     help="Local simulation jobs run at once [default: one per CPU, or per "
                          "CPU of the Ray cluster]."),
        click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
                     envvar="QRUN_EXECUTOR", show_default=True,
                     help="Where local simulation runs: worker processes here, or Ray "
                          "[env: QRUN_EXECUTOR]."),
        click.option("--ray-address", default=None, envvar="QRUN_RAY_ADDRESS", metavar="HOST:PORT",
                     help="The Ray cluster to use with --executor ray; without it a Ray "
                          "instance is started for the run [env: QRUN_RAY_ADDRESS]."),
    ]

    def gather(workers, executor, ray_address, **kwargs):
        return command(run_options=(workers, executor, ray_address), **kwargs)
    gather = functools.wraps(command)(gather)
    for option in reversed(options):
        gather = option(gather)
    return gather


no_progress_option = click.option("--no-progress", is_flag=True,
                                  help="No progress bar (it is off anyway when not on a terminal).")


@main.command()
@manifest_argument
@state_dir_option
@root_option
@executor_options
@no_progress_option
@reports_errors
def apply(manifest, state_dir, root, run_options, no_progress):
    """Run every experiment of the manifest that is not done yet; resume after any stop.

    MANIFEST may be a plan saved by `qrun plan --out FILE`: then exactly its experiments
    run, or nothing does (exit 1) if the manifest or the state changed since."""
    _run(manifest, state_dir, root, run_options, no_progress, retry_failed=False)


@main.command()
@manifest_argument
@state_dir_option
@root_option
@executor_options
@no_progress_option
@click.option("--resubmit-unresolved", is_flag=True,
              help="Also submit anew the jobs whose earlier submission could not be looked up "
                   "(a service without lookup, a refused credential). Only after checking at "
                   "the provider that they are not there: otherwise they are paid twice.")
@reports_errors
def retry(manifest, state_dir, root, run_options, no_progress, resubmit_unresolved):
    """Give failed experiments new attempts, then apply.

    A job whose submission's fate is unknown is looked up by its tag first, never sent
    blindly again."""
    _run(manifest, state_dir, root, run_options, no_progress, retry_failed=True,
         resubmit_unresolved=resubmit_unresolved)


@main.command()
@manifest_argument
@state_dir_option
@root_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@reports_errors
def status(manifest, state_dir, root, output):
    """Show the campaign's experiments by state, per backend, and its last apply."""
    from . import api

    report = api.status(manifest, state_dir, root)
    if output == "json":
        click.echo(json.dumps(report, indent=2, default=_plain))
    else:
        from . import render

        render.status(report)


def _plain(value):
    """JSON for the store's named rows (their fields), text for anything else (a path)."""
    as_dict = getattr(value, "as_dict", None)
    return as_dict() if callable(as_dict) else str(value)


@main.command()
@manifest_argument
@state_dir_option
@root_option
@click.option("-f", "--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), default=None,
              help="Output format [default: from the file extension]; parquet needs qrun[parquet].")
@click.option("--layout", type=click.Choice(["wide", "long", "spend"]), default="wide", show_default=True,
              help="wide: one row per experiment; long: one row per outcome of each completed "
                   "experiment (outcome, count, probability, a column per parameter); spend: one "
                   "row per backend, estimated cost beside the usage the provider reported.")
@click.option("-o", "--output", required=True, help="File to write, or - for standard output.")
@reports_errors
def export(manifest, state_dir, root, fmt, layout, output):
    """Write one row per experiment (key, circuit, backend, params, counts, provenance), or
    with --layout long one row per outcome."""
    from . import api

    count = api.export(manifest, output, fmt=fmt, state_dir=state_dir, root=root, layout=layout)
    if output != "-":
        click.echo(f"wrote {count} rows to {output}", err=True)


@main.command()
@manifest_argument
@state_dir_option
@root_option
@click.option("-o", "--output", required=True, help="HTML file to write, or - for standard output.")
@reports_errors
def report(manifest, state_dir, root, output):
    """Write the campaign as one HTML page that opens offline: summary, provenance,
    histograms, sweeps, backends compared (TVD, Hellinger fidelity), failures."""
    from . import api

    written = api.report(manifest, output, state_dir=state_dir, root=root)
    if output != "-":
        click.echo(f"wrote {output} ({written.bytes / 1024:,.0f} KiB): {written.experiments:,} "
                   f"experiments, {written.histograms} histograms drawn", err=True)


@main.command()
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@state_dir_option
@root_option
@click.option("-o", "--output", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("--alpha", type=float, default=None,
              help="Family-wise significance of 'beyond shot noise' [default 0.05].")
@reports_errors
def diff(a, b, state_dir, root, output, alpha):
    """Compare two campaigns: experiments removed, added, changed, and their stored results.

    A and B are manifests, PATH or PATH@REV (the manifest at a git revision); B may also be
    @REV or a bare REV: A's manifest at that revision. A is "before", B "after". Exit 0: no
    result differs beyond shot noise; 2: some do; 3: nothing could be compared; 1: error."""
    from . import api
    from . import diff as diffs

    try:
        report = api.diff(a, b, state_dir, root, alpha)
    except QrunError as exc:  # 2 means "differs" here, so errors are 1 (as plan --detailed-exitcode)
        _print_error(exc)
        sys.exit(EXIT_FAILED)
    if output == "json":
        click.echo(json.dumps(diffs.as_json(report), indent=2))
        for note in report.notes:  # in the markdown already; said here for a CI log
            click.echo(f"note: {note}", err=True)
    else:
        click.echo(diffs.as_markdown(report))
    sys.exit(report.exit_code)


@main.command()
@manifest_argument
@state_dir_option
@root_option
@reports_errors
def cancel(manifest, state_dir, root):
    """Cancel queued and running jobs (at their provider too); `qrun retry` resumes them."""
    from . import api

    summary = api.cancel(manifest, state_dir, root)
    click.echo(f"cancelled {summary['cancelled_remote']} remote and {summary['cancelled_local']} "
               "local jobs")
    for error in summary["errors"]:
        click.echo(f"could not cancel {error}", err=True)
    sys.exit(EXIT_FAILED if summary["errors"] else EXIT_OK)


@main.command()
@manifest_argument
@state_dir_option
@root_option
@click.option("--force", is_flag=True, help="Break the lock even if its holder seems alive.")
@reports_errors
def unlock(manifest, state_dir, root, force):
    """Break a campaign lock left by a process that is gone."""
    from . import api

    holder = api.unlock(manifest, state_dir, force=force, root=root)
    if holder is None:
        click.echo("campaign is not locked")
    else:
        click.echo(f"lock of pid {holder.pid} on {holder.host} broken")


@main.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@reports_errors
def providers(output):
    """List the providers a manifest may name: qrun's own and installed plugins'."""
    from . import api

    listing = api.providers()
    if output == "json":
        click.echo(json.dumps(listing, indent=2))
    else:
        from .render import providers_table

        providers_table(listing)
    for problem in listing["problems"]:
        click.echo(f"left out: {problem}", err=True)


@main.command()
@click.option("--builtin", is_flag=True,
              help="Only qrun's own providers (the schema checked in as schemas/qrun-v1.schema.json).")
@reports_errors
def schema(builtin):
    """Print the manifest's JSON Schema, with every installed provider (for editors)."""
    from . import api

    click.echo(api.manifest_schema(builtin_only=builtin), nl=False)
