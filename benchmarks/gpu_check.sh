#!/usr/bin/env bash
# The GPU checks of the training step, in one call of a lent GPU machine (../shared/tools/gpu/README.md: prepare.sh
# fills .dev/ with anomalib, the stand-in FEN in fp16 and magnetic_tile at 128²), each step's output under $OUT:
#   run(command="bash .dev/on_device.sh bash benchmarks/gpu_check.sh", carry=[".dev"], timeout_s=560)
# 1. the 16-mixed test; 2. benchmarks/training.py on CUDA at the paper's 256², batch 16, VGG19 to
# relu4_4 (fp32/TF32, no cache, bf16, fp16) and batch 4 (operators per step); 3. time to quality: magnetic_tile at 128²
# in bf16-mixed, the test set scored after every epoch beside PaDiM (stand-in VGG16-BN, fp16 copy).
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_throughput.py -k "fp16" -rs 2>&1 \
  | tail -15 | tee "$OUT/pytest.txt"
timeout 240 python3 benchmarks/training.py --accelerator cuda --sizes 256 --batches 16 --steps 24 --tap relu4_4 \
  --out "$OUT/speed_b16.csv" 2>&1 | grep -v -i "warn" | tail -20 | tee "$OUT/speed.txt"
timeout 60 python3 benchmarks/training.py --accelerator cuda --sizes 256 --batches 4 --steps 24 --tap relu4_4 \
  --variants "fp32 + FEN cache" --out "$OUT/speed_b4.csv" 2>&1 | grep -v -i "warn" | tail -6 | tee -a "$OUT/speed.txt"
timeout 150 python3 benchmarks/learning_curves.py --root .dev/data --category magnetic_tile --weights .dev/w16.pth \
  --epochs 8 --seed 42 --padim --precision bf16-mixed --out /tmp/curve 2>&1 | grep -E "^\{|PaDiM|fit_seconds" \
  | tee "$OUT/curve.txt"
cp /tmp/curve/test_curve.csv /tmp/curve/summary.json "$OUT/" 2>/dev/null
exit 0
