#!/usr/bin/env bash
# For a lent GPU machine, not run by CI: benchmark and a short tiny reproduction, printed as lines for the README.
# Usage: bash .ci/gpu_check.sh   (about 5 minutes on one H200; needs no download)
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements.txt -r tests/requirements.txt
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
echo "== tiny config (bf16 autocast, TF32)"; python tiny_distill.py --bench | grep -E "^bench|^speed"
echo "== paper-size student and HuBERT Base-size teacher, batch 8 x 4 s"
python tiny_distill.py --bench --preset paper --batch 8 --crop_s 4 | grep -E "^bench|^speed"
echo "== tiny first run: data, theta0, music distillation (500 steps)"
/usr/bin/time -f "wall %e s" python tiny_distill.py --domain music --out_dir out/gpu_music_s0 | tail -2
echo "== the same from cached teacher targets"
python tiny_distill.py --domain music --cache_targets --out_dir out/gpu_music_cached_s0 | tail -1
python tiny_distill.py --domain music --cache_targets --seed 1 --out_dir out/gpu_music_cached_s1 | tail -1
echo "== probe the student"
python probe.py --model out/gpu_music_s0/student.pt --tag gpu_music_s0 | tail -4
