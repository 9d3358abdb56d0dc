#!/usr/bin/env bash
# Builds the Hopper attention kernels alone (as check.py's library) once with the shipped
# backward and once per patch in dev/attention/variants/ (each a diff of hopper_bwd.cu), then
# checks every build against an fp32 torch reference and times the D128 backward against
# torch SDPA's cuDNN backend (variants.py). One GPU, ~1 min of builds (16 cores) + ~1.5 min.
#   dev/attention/variants.sh [variant ...]     (default: every patch)
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/out}/attn-variants
b=/tmp/attn-variants
rm -rf "$b" && mkdir -p "$b" "$out"
flags=(-gencode=arch=compute_90a,code=sm_90a -O3 -std=c++17 -Xcompiler -fPIC --expt-relaxed-constexpr)
common=(dev/attention/harness.cu csrc/ops/cuda/attention/hopper_fwd.cu csrc/ops/cuda/attention/flash_bwd.cu
        csrc/ops/cuda/attention/flash_bwd_2d.cu)
for f in "${common[@]}"; do nvcc "${flags[@]}" -Icsrc -c "$f" -o "$b/$(basename "$f" .cu).o" & done
names=(shipped); [ $# -gt 0 ] && names+=("$@") || for p in dev/attention/variants/*.patch; do names+=("$(basename "$p" .patch)"); done
for v in "${names[@]}"; do
  mkdir -p "$b/$v" && cp -r csrc "$b/$v/"
  if [ "$v" != shipped ]; then
    if command -v patch >/dev/null; then patch -s -d "$b/$v" -p1 < "dev/attention/variants/$v.patch"
    else (cd "$b/$v" && git apply -p1 "$OLDPWD/dev/attention/variants/$v.patch"); fi
  fi
  nvcc "${flags[@]}" -Xptxas -v -I"$b/$v/csrc" -c "$b/$v/csrc/ops/cuda/attention/hopper_bwd.cu" -o "$b/$v/hopper_bwd.o" \
    > "$out/ptxas-$v.log" 2>&1 &
done
wait
for v in "${names[@]}"; do
  echo "$v: $(grep -E 'spill|Used' "$out/ptxas-$v.log" | sed -n "1,4p" | tr -s ' ' | tr '\n' ' ')"
  nvcc -shared -gencode=arch=compute_90a,code=sm_90a -cudart static -o "$b/lib$v.so" "$b"/*.o "$b/$v/hopper_bwd.o"
done
# Correctness, one process per library at once (a fault or hang stays in its process).
for v in "${names[@]}"; do
  timeout 100 python3 dev/attention/variants.py check "$b/lib$v.so" > "$out/check-$v.log" 2>&1 &
done
wait
passed=()
for v in "${names[@]}"; do
  if grep -q "correctness: .* ok$" "$out/check-$v.log"; then passed+=("$v"); echo "$v: correct"
  else echo "$v: FAILED (tail of $out/check-$v.log:)"; tail -5 "$out/check-$v.log"; fi
done
[ ${#passed[@]} -gt 0 ] || exit 1
python3 dev/attention/variants.py time $(for v in "${passed[@]}"; do printf '%s ' "$b/lib$v.so"; done) 2>&1 \
  | tee "$out/timing.log"
