#!/usr/bin/env bash
# Every GPU figure of BENCHMARKS.md in one go: bash benchmarks/gpu.sh LOGDIR
# Needs a CUDA GPU, archsim importable, torchattacks, and the zoo weights in $ARCHSIM_CACHE (or trained on first use).
set -euo pipefail
logs=${1:?usage: bash benchmarks/gpu.sh LOGDIR}
mkdir -p "$logs"
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$logs/gpu.txt"
python3 precision.py --device cuda 2>&1 | tee "$logs/precision.txt"
python3 attack.py --models timm:resnet50,pretrained=false timm:vit_small_patch16_224,pretrained=false \
    --n-images 512 --batch-size 256 --steps 10 --repeats 2 --device cuda --compile 2>&1 | tee "$logs/attack_224.txt"
python3 attack.py --n-images 2048 --batch-size 1024 --steps 10 --repeats 2 --device cuda 2>&1 | tee "$logs/attack_zoo.txt"
python3 batch.py --models timm:resnet50,pretrained=false timm:vit_small_patch16_224,pretrained=false \
    --device cuda --n-images 2048 --steps 5 --fixed 128 256 2>&1 | tee "$logs/batch.txt"
for model in resnet50 vit_small_patch16_224; do
    python3 overhead.py --model "timm:$model,pretrained=false" --n-images 1536 --batch-size 256 --steps 5 --device cuda 2>&1 \
        | tee "$logs/overhead_$model.txt"
done
# The tests that only run on CUDA (skipped elsewhere).
(cd .. && python3 -m pytest -q -p no:cacheprovider -k cuda archsim) 2>&1 | tee "$logs/tests_cuda.txt"
