// An asymmetric circuit: only qubit 0 is flipped, so every shot reads "100" in qrun's
// bit order (classical bit 0 leftmost) on every provider.
OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
bit[3] c;
x q[0];
c = measure q;
