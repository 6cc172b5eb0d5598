"""What `qrun status` prints of a provider's calibration: a label a person can compare."""

from qrun.render import calibration_label, reported_usage


def test_a_dated_calibration_shows_its_date_and_an_undated_one_its_digest():
    ibm = {"backend": "ibm_brisbane", "backend_version": "1.2.3",
           "properties_last_update": "2026-11-30T08:00:00Z"}
    assert calibration_label(ibm) == "2026-11-30T08:00:00Z"
    pasqal = {"device_type": "FRESNEL", "version": "1", "pulser_version": "1.9.1",
              "specs_sha256": "ab" * 32}
    assert calibration_label(pasqal) == "specs abababababab"  # not the schema version "1"
    quandela = {"pcvl_version": "1.3.1", "perfs_sha256": "cd" * 32, "specs_sha256": "ef" * 32}
    assert calibration_label(quandela) == "perfs cdcdcdcdcdcd, specs efefefefefef"
    assert calibration_label({"version": "7"}) == "version 7"


def test_reported_usage_names_the_latest_calibration():
    line = reported_usage({"tasks": 2, "shots": 400, "seconds": None, "jobs": 2, "cost": None,
                           "calibrations": [{"specs_sha256": "0" * 64}, {"specs_sha256": "f" * 64}]},
                          "USD")
    assert "2 tasks, 400 shots over 2 jobs" in line
    assert line.endswith("ran under 2 calibration(s), latest specs ffffffffffff")


def test_the_plan_table_fits_an_80_column_terminal_with_whole_headings(project):
    """Only the reasons the plan has get a column, so headings are not cut to 'circ…'."""
    import os

    from .conftest import qrun, write

    manifest = write(project, "fits.yaml", """
        apiVersion: qrun/v1
        kind: Campaign
        metadata: {name: fits}
        spec:
          shots: 100
          circuits:
            - {name: ghz, source: circuits/ghz.qasm}
            - {name: rot, source: circuits/rot.qasm, sweep: {theta: [0.0, 1.0]}}
          backends: [{name: aer, provider: qiskit.aer}]
    """)
    assert qrun("apply", manifest, "--no-progress").returncode == 0
    manifest.write_text(manifest.read_text().replace("shots: 100", "shots: 200").replace(
        "[0.0, 1.0]", "[0.0, 1.0, 2.0]"))
    shown = qrun("plan", manifest, env={**os.environ, "COLUMNS": "80"})
    assert shown.returncode == 0, shown.stderr
    heading = next(line for line in shown.stdout.splitlines() if "circuit" in line)
    assert "…" not in heading and max(map(len, shown.stdout.splitlines())) <= 80
    assert [h.strip() for h in heading.strip("┃ ").split("┃")] == \
        ["circuit", "backend", "provider", "new", "changed"]
