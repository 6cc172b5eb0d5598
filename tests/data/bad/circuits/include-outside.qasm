// OpenQASM 2 including a file outside the repository (Qiskit would open it).
OPENQASM 2.0;
include "qelib1.inc";
include "/etc/hostname";
qreg q[1];
creg c[1];
measure q -> c;
