#!/usr/bin/env bash
# Re-run the benchmarks whose numbers are quoted in docs/benchmarks.md and docs/your-model.md:
# ≈45 min on 2 CPU cores for parts 1-4, about 3 h more for part 5 (SKIP_LONG=1 leaves it out).
# Results land in bench/results/; docs/benchmarks.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
SB=.venv/bin/spikebridge
PY=.venv/bin/python
R=bench/results
mkdir -p "$R"
# 1. Shipped model: ANN vs QCFS vs COS (ρ = 4) on the full 10k test set.
$SB compare --methods qcfs,cos --rho 4 --T 1,2,4,8,16,32 --out "$R/shipped_compare" --quiet
# 2. Offset spikes / Ratio / MSE with 0, 1, 2, 4 iterations (T = L = 4), 2000 test images.
$SB analyse --limit 2000 --iterations 0,1,2,4 --out "$R/shipped_analyse" --quiet
# 3. Simulation cost vs T × the strongest ANN forwards (docs/benchmarks.md §4), the scaling
#    curves, SpikingJelly side by side (only if installed: bench/requirements-spikingjelly.txt);
#    COS calibration cost.
$PY bench/simulation_cost.py --label after --out-dir "$R/simulation_cost"
$PY bench/scaling.py --out "$R/scaling.json" --plot docs/scaling.png
if $PY -c "import spikingjelly" 2>/dev/null; then
  $PY bench/spikingjelly_side_by_side.py --out "$R/spikingjelly_side_by_side.json"
fi
$PY bench/cos_cost.py --out "$R/cos_cost.json"
# 4. A model "of the kind" in the COS issue: 4-conv, L = 4, 3 epochs; and L / length variants.
for spec in "L4_3ep qcfs:L=4,theta=2 3" "L8_3ep qcfs:L=8,theta=2 3" "L2_3ep qcfs:L=2,theta=2 3"; do
  set -- $spec
  [ -f "$R/models/$1/config.json" ] || $SB train --out "$R/models/$1" --activation "$2" --epochs "$3" --quiet
  $SB compare --model "$R/models/$1" --methods qcfs,cos --rho 4 --T 1,2,4,8 --out "$R/compare_$1" --quiet
done
$SB compare --model "$R/models/L8_3ep" --methods cos --rho 8 --T 1,2,4,8 --out "$R/compare_L8_3ep_rho8" --quiet
# 5. Long runs: saved-SNN start-up (§10), event data end to end and its readers (§11), the
#    spiking max-pool (§12), the worked own-model example (docs/your-model.md).
if [ "${SKIP_LONG:-0}" != 1 ]; then
  $PY bench/snn_start.py --rounds 5 --out "$R/snn_start.json"
  $PY bench/events_readers.py
  $PY bench/events_fashion.py --train 6000 --test 1000 --epochs 4 --json "$R/events_fashion.json"
  $PY bench/maxpool_error.py --epochs 2 --train-limit 12000 --limit 1000
  $PY bench/maxpool_cost.py --rounds 5 --images 64 --T 8
  $PY bench/your_model.py --epochs 3 --finetune-epochs 4 --limit 2000 --routes keep,avg
fi
