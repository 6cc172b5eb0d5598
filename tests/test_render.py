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
