// OpenQASM 3 including a device that never ends (the native importer would read it forever).
OPENQASM 3.0;
include "stdgates.inc";
include "/dev/zero";
qubit[1] q;
bit[1] c;
c[0] = measure q[0];
