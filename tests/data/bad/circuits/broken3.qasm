// OpenQASM 3 using a qubit that was never declared.
OPENQASM 3.0;
include "stdgates.inc";
qubit[1] q;
bit[1] c;
h r[0];
c[0] = measure q[0];
