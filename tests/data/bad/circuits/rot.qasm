// One qubit rotated by theta, then entangled with a second: P(11) = sin^2(theta/2).
OPENQASM 3.0;
include "stdgates.inc";
input float theta;
qubit[2] q;
bit[2] c;
rx(theta) q[0];
cx q[0], q[1];
c[0] = measure q[0];
c[1] = measure q[1];
