// Six parameters, for sweeps whose size is the product of six lists.
OPENQASM 3.0;
include "stdgates.inc";
input float a;
input float b;
input float c;
input float d;
input float e;
input float f;
qubit[1] q;
bit[1] m;
rx(a) q[0];
ry(b) q[0];
rz(c) q[0];
rx(d) q[0];
ry(e) q[0];
rz(f) q[0];
m[0] = measure q[0];
