// Two parameters swept together: rotate by theta, wait with a phase phi, rotate back.
OPENQASM 3.0;
include "stdgates.inc";
input float theta;
input float phi;
qubit[1] q;
bit[1] c;
rx(theta) q[0];
rz(phi) q[0];
rx(theta) q[0];
c[0] = measure q[0];
