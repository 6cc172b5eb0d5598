// OpenQASM 2 including gate definitions from a file next to it.
OPENQASM 2.0;
include "qelib1.inc";
include "gates.inc";
qreg q[1];
creg c[1];
flip q[0];
measure q -> c;
