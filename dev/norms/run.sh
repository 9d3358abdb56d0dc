#!/usr/bin/env bash
# Builds dev/norms/harness.cu (the norm backward and cross-entropy kernels at several
# launch shapes, beside cudaMemcpy of the same bytes) and runs it; output to $OUT/norms.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvcc -gencode=arch=compute_90,code=sm_90 -O3 -std=c++17 --expt-relaxed-constexpr -Icsrc -I. -Xptxas -v \
  -o /tmp/norms-harness dev/norms/harness.cu > "$out/norms-ptxas.log" 2>&1
/tmp/norms-harness 2>&1 | tee "$out/norms.log"
