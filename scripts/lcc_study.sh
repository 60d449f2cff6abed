#!/usr/bin/env bash
# Does keeping the largest connected component per organ (`tctseg predict --lcc`,
# `inference.largest_component`) help the CHAOS width-16 recipe? Chosen on the VALIDATION
# subjects (chaos_31, chaos_33) only, with the main table's ten checkpoints (TCT and TAL,
# seeds 0-4, each run's best-validation checkpoint) and each method's five-seed ensemble.
#
# The rule, written before the runs that decide it (issue 26, 2026-12-07):
#   adopt --lcc for the CHAOS configs if, averaged over the ten single checkpoints, it lowers
#   the validation mean HD95 AND lowers the validation mean DSC by no more than 0.5 points.
# The test subjects are then scored once more with the adopted setting, reported beside (not
# instead of) the table scored without it.
#
# Usage: scripts/lcc_study.sh [COMPARE_DIR] [OUT]   (one PyTorch job at a time: run alone)
set -euo pipefail
compare=${1:-runs/chaos_t2/compare}
out=${2:-runs/lcc_study}
shared=${TCTSEG_SHARED:-../shared}
images="$out/val_images"
labels="$out/val_labels"
mkdir -p "$images" "$labels"
for case in chaos_31 chaos_33; do
  ln -sf "$(realpath "$shared/data/chaos-t2/imagesTr/${case}_0000.nii.gz")" "$images/$case.nii.gz"
  ln -sf "$(realpath "$shared/data/chaos-t2/labelsTr/$case.nii.gz")" "$labels/$case.nii.gz"
done

score() {  # score NAME OPTIONS CHECKPOINT...
  local name=$1 options=$2; shift 2
  local pred="$out/pred/$name"
  if [ ! -f "$pred/index.json" ]; then
    # shellcheck disable=SC2086
    tctseg predict "$@" "$images" "$pred" $options --overwrite --no-progress >/dev/null
  fi
  if [ ! -f "$pred/metrics/metrics.json" ]; then
    # CHAOS's own label ids, from its dataset.json through the config's chaos_nifti dataset
    tctseg evaluate "$pred" "$labels" --config configs/chaos_t2_full.yaml --dataset chaos_val \
      --out "$pred/metrics" --no-progress >/dev/null
  fi
}

for method in tct tal; do
  for seed in 0 1 2 3 4; do
    checkpoint="$compare/main/$method/seed$seed/$method/checkpoint_best.pt"
    score "$method-seed$seed-plain" "" "$checkpoint"
    score "$method-seed$seed-lcc" "--lcc" "$checkpoint"
  done
  score "$method-ensemble-plain" "" "$compare"/main/$method/seed[0-4]/$method/checkpoint_best.pt
  score "$method-ensemble-lcc" "--lcc" "$compare"/main/$method/seed[0-4]/$method/checkpoint_best.pt
done

python - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    return json.loads((out / "pred" / name / "metrics" / "metrics.json").read_text())
rows, deltas = [], {"dsc": [], "hd95": []}
for method in ("tct", "tal"):
    for member in [f"seed{s}" for s in range(5)] + ["ensemble"]:
        plain, lcc = load(f"{method}-{member}-plain"), load(f"{method}-{member}-lcc")
        rows.append((method, member, plain["mean_dsc"], lcc["mean_dsc"], plain["mean_hd95"], lcc["mean_hd95"]))
        if member != "ensemble":
            deltas["dsc"].append(100 * (lcc["mean_dsc"] - plain["mean_dsc"]))
            deltas["hd95"].append(lcc["mean_hd95"] - plain["mean_hd95"])
lines = ["| method | checkpoint | DSC % plain | DSC % --lcc | HD95 mm plain | HD95 mm --lcc |", "|---|---|---|---|---|---|"]
lines += [f"| {m} | {k} | {100*a:.2f} | {100*b:.2f} | {c:.1f} | {d:.1f} |" for m, k, a, b, c, d in rows]
mean_dsc = sum(deltas["dsc"]) / len(deltas["dsc"])
mean_hd = sum(deltas["hd95"]) / len(deltas["hd95"])
adopt = mean_hd < 0 and mean_dsc >= -0.5
lines += ["", f"Over the ten single checkpoints, --lcc minus plain: mean DSC {mean_dsc:+.2f} points, "
          f"mean HD95 {mean_hd:+.1f} mm. Rule (HD95 lower, DSC no more than 0.5 points lower): "
          f"{'adopt --lcc' if adopt else 'keep the config as it is'}."]
text = "\n".join(lines) + "\n"
(out / "lcc_study.md").write_text(text)
print(text)
EOF
