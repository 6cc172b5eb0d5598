"""The on-demand simulators the fake Braket service offers, as Braket publishes them, and the
checks a CreateQuantumTask must pass there.

Capabilities (GetDevice's ``deviceCapabilities``), from what AWS published:
- SV1: OpenQASM operations, pragmas, forbidden pragmas, result types, 34 qubits, shots 0 to
  100,000, 0.075 USD a minute, as `AwsDevice(Devices.Amazon.SV1).properties` printed them in
  amazon-braket-examples (Getting_Started_with_OpenQASM_on_Braket and
  Getting_Devices_and_Checking_Device_Properties, 2026). No gate modifier: SV1 answered
  ``[line 4] uses an unsupported GateModifer: 'ctrl'`` (amazon-braket-sdk-python#683) and the
  printed properties list none; nor ``U`` (#879: "SV1 actually doesn't support u").
- DM1: 17 qubits, shots 0 to 100,000, SV1's gates of the same era (with ``unitary``) and the
  ten noise channels, their pragmas, density-matrix result types (Braket's docs and
  examples; its operation list was not found printed, so it is SV1's plus noise, as the
  local braket_dm declares).
- TN1: up to 50 qubits, shots must be above 0, Sample/Expectation/Variance (Braket's TN1
  page). Retired in 2026 (amazon-braket-sdk-python "depr: tn1 retirement"): GetDevice
  answers RETIRED and tasks are refused with DeviceRetiredException, unless the fake is
  told otherwise (``FakeBraket(retired=())``).

What the service refuses, with a 400 ValidationException whose message names the line, as
the real one does: operations, modifiers and pragmas the device does not declare (or
forbids), statements beyond what Braket's docs list for its devices (gate and subroutine
definitions, reset, if/for/while, mid-circuit measurement: those run on the local simulator
only), more qubits than the device has, shots outside its range, inputs not given.
"""

from __future__ import annotations

import functools
import json

DEVICE_PREFIX = "arn:aws:braket:::device/quantum-simulator/amazon/"

_OBSERVABLES = ["x", "y", "z", "h", "i", "hermitian"]

# SV1's gates as printed in 2026 (no `unitary`, which 2023-2025 printings had, and
# gpi/gpi2/ms added), in the printed order.
SV1_OPERATIONS = [
    "ccnot", "cnot", "cphaseshift", "cphaseshift00", "cphaseshift01", "cphaseshift10", "cswap",
    "cy", "cz", "ecr", "h", "i", "iswap", "pswap", "phaseshift", "rx", "ry", "rz", "s", "si",
    "swap", "t", "ti", "v", "vi", "x", "xx", "xy", "y", "yy", "z", "zz", "gpi", "gpi2", "ms"]
_GATES_2025 = [
    "ccnot", "cnot", "cphaseshift", "cphaseshift00", "cphaseshift01", "cphaseshift10", "cswap",
    "cy", "cz", "ecr", "h", "i", "iswap", "pswap", "phaseshift", "rx", "ry", "rz", "s", "si",
    "swap", "t", "ti", "unitary", "v", "vi", "x", "xx", "xy", "y", "yy", "z", "zz"]
NOISE = ["amplitude_damping", "bit_flip", "depolarizing", "generalized_amplitude_damping",
         "kraus", "pauli_channel", "phase_damping", "phase_flip", "two_qubit_dephasing",
         "two_qubit_depolarizing"]
_NOISE_PRAGMAS = [f"braket_noise_{name}" for name in NOISE]


def _result(name: str, low: int, high: int, observables: bool = False) -> dict:
    entry = {"name": name, "minShots": low, "maxShots": high}
    if observables:
        entry["observables"] = _OBSERVABLES
    return entry


def _openqasm(operations, pragmas, forbidden, results) -> dict:
    return {
        "actionType": "braket.ir.openqasm.program", "version": ["1"],
        "supportedOperations": operations, "supportedModifiers": [],
        "supportedPragmas": pragmas, "forbiddenPragmas": forbidden,
        "supportedResultTypes": results,
        "supportPhysicalQubits": False, "supportsPartialVerbatimBox": False,
        "requiresContiguousQubitIndices": False, "requiresAllQubitsMeasurement": False,
        "supportsUnassignedMeasurements": True, "disabledQubitRewiringSupported": False,
    }


def _jaqcd(operations, results) -> dict:
    return {"actionType": "braket.ir.jaqcd.program", "version": ["1"],
            "supportedOperations": operations, "supportedResultTypes": results}


def _capabilities(qubits: int, shots: tuple, action: dict, summary: str) -> dict:
    from braket.device_schema.simulators import GateModelSimulatorDeviceParameters

    return {
        "braketSchemaHeader": {"name": "braket.device_schema.simulators."
                                       "gate_model_simulator_device_capabilities", "version": "1"},
        "service": {
            "executionWindows": [{"executionDay": "Everyday", "windowStartHour": "00:00",
                                  "windowEndHour": "23:59:59"}],
            "shotsRange": list(shots),
            "deviceCost": {"price": 0.075, "unit": "minute"},
            "deviceDocumentation": {"summary": summary},
            "deviceLocation": "Amazon Web Services",
            # When the properties were last updated (a QPU's calibration): fixed here, the
            # fake's simulators do not drift; FakeBraket.recalibrate() moves it on.
            "updatedAt": "2026-11-30T08:00:00",
        },
        "action": action,
        "paradigm": {"qubitCount": qubits},
        "deviceParameters": json.loads(GateModelSimulatorDeviceParameters.schema_json()),
    }


def _sv1() -> dict:
    high = 100_000
    results = [_result("Sample", 1, high, True), _result("Expectation", 0, high, True),
               _result("Variance", 0, high, True), _result("Probability", 1, high),
               _result("Amplitude", 0, 0),
               {"name": "AdjointGradient", "observables": _OBSERVABLES[:5], "minShots": 0,
                "maxShots": 0}]
    pragmas = ["braket_unitary_matrix", "braket_basis_rotation", "braket_result_type_sample",
               "braket_result_type_expectation", "braket_result_type_variance",
               "braket_result_type_probability", "braket_result_type_amplitude",
               "braket_result_type_adjoint_gradient"]
    forbidden = ["braket_result_type_state_vector", "braket_result_type_density_matrix",
                 *_NOISE_PRAGMAS]
    return _capabilities(34, (0, high), {
        "braket.ir.jaqcd.program": _jaqcd(_GATES_2025, results[:5]),
        "braket.ir.openqasm.program": _openqasm(SV1_OPERATIONS, pragmas, forbidden, results),
    }, "State vector simulator, up to 34 qubits.")


def _dm1() -> dict:
    high = 100_000
    results = [_result("Sample", 1, high, True), _result("Expectation", 0, high, True),
               _result("Variance", 0, high, True), _result("Probability", 0, high),
               _result("DensityMatrix", 0, 0)]
    pragmas = ["braket_unitary_matrix", "braket_result_type_density_matrix",
               "braket_result_type_sample", "braket_result_type_expectation",
               "braket_result_type_variance", "braket_result_type_probability", *_NOISE_PRAGMAS]
    forbidden = ["braket_result_type_state_vector", "braket_result_type_amplitude",
                 "braket_result_type_adjoint_gradient"]
    return _capabilities(17, (0, high), {
        "braket.ir.jaqcd.program": _jaqcd(_GATES_2025 + NOISE, results),
        "braket.ir.openqasm.program": _openqasm(_GATES_2025 + NOISE, pragmas, forbidden, results),
    }, "Density matrix simulator with noise, up to 17 qubits.")


def _tn1() -> dict:
    high = 100_000  # TN1's page says shots must be > 0; its upper bound was not found
    results = [_result("Sample", 1, high, True), _result("Expectation", 1, high, True),
               _result("Variance", 1, high, True)]
    gates = [g for g in _GATES_2025 if g != "unitary"]
    pragmas = ["braket_result_type_sample", "braket_result_type_expectation",
               "braket_result_type_variance"]
    forbidden = ["braket_unitary_matrix", "braket_result_type_state_vector",
                 "braket_result_type_density_matrix", "braket_result_type_probability",
                 "braket_result_type_amplitude", "braket_result_type_adjoint_gradient",
                 *_NOISE_PRAGMAS]
    return _capabilities(50, (1, high), {
        "braket.ir.jaqcd.program": _jaqcd(gates, results),
        "braket.ir.openqasm.program": _openqasm(gates, pragmas, forbidden, results),
    }, "Tensor network simulator, up to 50 qubits.")


PROGRAM_SET = "braket.ir.openqasm.program_set"
# The program-set action as Braket's local simulators declare it (default-simulator 1.41.2):
# what the fake adds to its devices when it is asked to stand in for a device that takes
# program sets (AWS documents them for its gate-based QPUs, not for SV1, DM1 or TN1).
PROGRAM_SET_ACTION = {"actionType": PROGRAM_SET, "version": ["1"], "maximumExecutables": 100,
                      "maximumTotalShots": 200_000}


class SimulatorDevice:
    """One on-demand simulator: its GetDevice answer and its CreateQuantumTask checks."""

    def __init__(self, short: str, name: str, capabilities: dict, simulator: str):
        self.short = short
        self.arn = DEVICE_PREFIX + short
        self.name = name
        self.capabilities = capabilities
        self.simulator = simulator  # "sv" or "dm": which local simulator runs the tasks
        self.openqasm = capabilities["action"]["braket.ir.openqasm.program"]
        self.program_sets = capabilities["action"].get(PROGRAM_SET)  # None: it takes none

    def with_program_sets(self, action: dict = PROGRAM_SET_ACTION) -> SimulatorDevice:
        """This device, declaring (and accepting) program sets as ``action`` says."""
        capabilities = {**self.capabilities,
                        "action": {**self.capabilities["action"], PROGRAM_SET: dict(action)}}
        return SimulatorDevice(self.short, self.name, capabilities, self.simulator)

    def describe(self, status: str) -> dict:
        """GetDevice's answer (deviceCapabilities is a JSON document in a string)."""
        return {"deviceArn": self.arn, "deviceName": self.name, "providerName": "Amazon Braket",
                "deviceType": "SIMULATOR", "deviceStatus": status,
                "deviceCapabilities": json.dumps(self.capabilities),
                "deviceQueueInfo": [{"queue": "QUANTUM_TASKS_QUEUE", "queueSize": "0",
                                     "queuePriority": "Normal"}]}

    def refusal(self, action: str, shots: int) -> dict | None:
        """Why the service would refuse this task, as the body of its 400
        ValidationException (``message``, and for program sets the failures), or None."""
        try:
            program = json.loads(action)
        except ValueError:
            return {"message": "action is not a JSON document"}
        header = (program.get("braketSchemaHeader") or {}).get("name")
        if header == PROGRAM_SET:
            return self.program_set_refusal(program, shots)
        if header != "braket.ir.openqasm.program":
            return {"message": f"action type {header!r} is not supported by this fake (OpenQASM only)"}
        low, high = self.capabilities["service"]["shotsRange"]
        if not low <= shots <= high:
            return {"message": f"Number of shots {shots} is not in the range [{low}, {high}] "
                               f"supported by device {self.arn}"}
        problem = self._program_problem(program.get("source", ""),
                                        frozenset(program.get("inputs") or {}), shots)
        return {"message": problem} if problem else None

    def program_set_refusal(self, action: dict, shots: int) -> dict | None:
        """Why the service would refuse this program set, as the body of its 400
        ValidationException (``message``, and ``programSetValidationFailures`` naming the
        program and inputs index at fault, as botocore's model has them), or None."""
        from braket.ir.openqasm import ProgramSet

        if self.program_sets is None:
            return {"message": f"Device {self.arn} does not support the action type {PROGRAM_SET}"}
        try:
            program_set = ProgramSet.parse_obj(action)
        except ValueError as exc:  # pydantic: no program, scalar or unequal input lists
            return {"message": "the program set is not valid: " + " ".join(str(exc).split())}
        count = program_set.num_executables
        limit = self.program_sets["maximumExecutables"]
        total_low = self.program_sets.get("minimumTotalShots") or 1
        total_high = self.program_sets["maximumTotalShots"]
        if count > limit:
            return {"message": f"The program set has {count} executables; device {self.arn} "
                               f"takes at most {limit}"}
        if shots == 0:
            return {"message": "Shots must not be zero. Result types are not supported with "
                               "program set."}
        if shots % count:
            return {"message": f"Total shots {shots} must be divisible by the number of "
                               f"executables {count}"}
        if not total_low <= shots <= total_high:
            return {"message": f"Total shots {shots} are not in the range [{total_low}, "
                               f"{total_high}] of device {self.arn} for program sets"}
        failures = self._program_set_failures(program_set, shots // count)
        if failures:
            return {"message": "Program set validation failed.", "reason": "ProgramSetValidationFailed",
                    "programSetValidationFailures": failures}
        return None

    def _program_set_failures(self, program_set, shots_each: int) -> list:
        """One failure per program whose text the device refuses, run with ``shots_each``."""
        failures = []
        low, high = self.capabilities["service"]["shotsRange"]
        for index, program in enumerate(program_set.programs):
            problem = (f"Number of shots {shots_each} per executable is not in the range "
                       f"[{low}, {high}] supported by device {self.arn}"
                       if not low <= shots_each <= high else
                       self._program_problem(program.source, frozenset(program.inputs or {}), shots_each))
            if problem:
                failures.append({"programIndex": index, "errors": [problem]})
        return failures

    @functools.lru_cache(maxsize=1024)  # noqa: B019 (one device object per fake, alive as long as it)
    def _program_problem(self, source: str, input_names: frozenset, shots: int) -> str | None:
        # Parsing with Braket's ANTLR parser costs milliseconds of CPU per task, and a sweep
        # sends one text a thousand times with other inputs: the verdict depends only on
        # these three, so it is remembered (bench/remote_concurrency.py runs this fake in
        # its own process, beside the two clients it compares).
        return _ProgramCheck(self, source, dict.fromkeys(input_names), shots).problem()


DEVICES = {device.arn: device for device in (
    SimulatorDevice("sv1", "SV1", _sv1(), "sv"),
    SimulatorDevice("dm1", "dm1", _dm1(), "dm"),
    SimulatorDevice("tn1", "TN1", _tn1(), "sv"),
)}
RETIRED = (DEVICE_PREFIX + "tn1",)


class _ProgramCheck:
    """An OpenQASM program walked against what one device declares."""

    def __init__(self, device: SimulatorDevice, source: str, inputs: dict, shots: int):
        self.device, self.source, self.inputs, self.shots = device, source, inputs, shots
        action = device.openqasm
        self.operations = set(action["supportedOperations"])
        self.modifiers = {m["name"] for m in action.get("supportedModifiers") or []}
        self.pragmas = set(action.get("supportedPragmas") or [])
        self.forbidden = set(action.get("forbiddenPragmas") or [])
        self.qubit_count = device.capabilities["paradigm"]["qubitCount"]
        self.registers: dict = {}  # qubit register -> size
        self.measured: set = set()  # (register, index) already measured

    def problem(self) -> str | None:
        from braket.default_simulator.openqasm.parser import openqasm_ast as ast
        from braket.default_simulator.openqasm.parser.openqasm_parser import parse

        try:
            program = parse(self.source)
        except Exception as exc:  # the parser's own words
            return f"the OpenQASM program does not parse: {' '.join(str(exc).split())}"
        for statement in program.statements:
            line = f"[line {statement.span.start_line}]" if statement.span else "[line ?]"
            refusal = self._statement(statement, ast)
            if refusal:
                return f"{line} {refusal}"
        declared = sum(self.registers.values())
        if declared > self.qubit_count:
            return (f"the program uses {declared} qubits; device {self.device.arn} has "
                    f"{self.qubit_count}")
        return None

    def _statement(self, statement, ast) -> str | None:
        kind = type(statement).__name__
        if isinstance(statement, ast.QubitDeclaration):
            self.registers[statement.qubit.name] = statement.size.value if statement.size else 1
        elif isinstance(statement, ast.IODeclaration):
            name = statement.identifier.name
            if name not in self.inputs:
                return f"input {name!r} is declared but no value was given in inputs"
        elif isinstance(statement, ast.QuantumGate):
            return self._gate(statement)
        elif isinstance(statement, ast.QuantumMeasurementStatement):
            for qubit in self._qubits(statement.measure.qubit):
                self.measured.add(qubit)
        elif isinstance(statement, ast.Pragma):
            return self._pragma(statement.command)
        elif isinstance(statement, (ast.ClassicalDeclaration, ast.Include)):
            return None
        elif isinstance(statement, ast.QuantumBarrier):
            return None if "barrier" in self.operations else "uses barrier. barrier is not supported"
        else:
            # Gate and subroutine definitions, reset, if/for/while, gphase, boxes: Braket's
            # docs list them for the local simulator only.
            return f"uses {kind}. {kind} is not supported"
        return None

    def _gate(self, gate) -> str | None:
        name = gate.name.name
        for modifier in gate.modifiers:
            if modifier.modifier.name not in self.modifiers:
                return f"uses an unsupported GateModifer: '{modifier.modifier.name}'"
        if name not in self.operations:
            return f"uses a gate: {name} which is not supported by the device"
        for qubit in (q for target in gate.qubits for q in self._qubits(target)):
            if qubit in self.measured:
                return ("uses an operation on a qubit after its measurement (mid-circuit "
                        "measurement), which is not supported")
        return None

    def _pragma(self, command: str) -> str | None:
        words = command.split()
        if len(words) < 2 or words[0] != "braket":
            return None  # not Braket's: ignored, as Braket ignores unknown pragmas
        kind = words[1]
        if kind == "result" and len(words) > 2:
            pragma = f"braket_result_type_{words[2]}"
        elif kind == "noise" and len(words) > 2:
            pragma = f"braket_noise_{words[2].split('(')[0]}"
        elif kind == "unitary":
            pragma = "braket_unitary_matrix"
        elif kind == "verbatim":
            return "uses a verbatim box, which is not supported by this device"
        else:
            pragma = f"braket_{kind}"
        if pragma in self.forbidden or pragma not in self.pragmas:
            return f"uses the pragma {pragma}, which is not supported by the device"
        if kind == "result":
            return self._result_shots(words[2])
        return None

    def _result_shots(self, result: str) -> str | None:
        name = "".join(part.capitalize() for part in result.split("_"))
        for entry in self.device.openqasm["supportedResultTypes"]:
            if entry["name"] == name and not entry["minShots"] <= self.shots <= entry["maxShots"]:
                return (f"result type {name} needs {entry['minShots']} to {entry['maxShots']} "
                        f"shots on this device, not {self.shots}")
        return None

    def _qubits(self, target) -> list:
        """(register, index) of every qubit an operand names."""
        name = target.name.name if hasattr(target, "indices") else target.name
        if hasattr(target, "indices") and target.indices:
            index = target.indices[0][0]
            return [(name, getattr(index, "value", None))]
        return [(name, i) for i in range(self.registers.get(name, 1))]
