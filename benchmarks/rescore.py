r"""Score a trained FEGAN checkpoint through the shipped path: its statistics measured again as ``anomalib test`` does.

The checkpoint's statistics are dropped and the model's own pass measures them when the test starts
(``measuring.StatisticsSchedule``: the fitted training images, pre-processed, leave-one-out), the post-processor's
thresholds are re-learnt for the new scale on anomalib's validation set (the test set, MVTecAD's ``same_as_test``),
and anomalib's evaluator gives the figures. Nothing here re-implements the score: a setting is a model argument
(``--model-args``), so every row is what a user of that setting gets.

The training images are the ones the run fitted: the same ``PlantedValidation`` split (``--holdout-ratio``, the run's
``--seed``) of the datamodule's training set.

    python benchmarks/rescore.py --root datasets --category magnetic_tile --seed 42 \
        --checkpoint runs/magnetic_tile/s42/fegan/Fegan/MVTecAD/magnetic_tile/latest/weights/lightning/model.ckpt \
        --out rescore/magnetic_tile_s42.csv
    # the same checkpoint with the per-cell half standardised in-sample (0.3.0.dev0's hybrid): --in-sample
    # trained on one set, tested on another: --test-category magnetic_tile_unaligned
    # another setting: --model-args '{"feature_distance": "nearest", "feature_map_weight": 0.6}'

Appends one row per call to ``--out`` (CSV): the set, seed, setting, image / pixel AUROC, AUPRO, and the seconds of the
statistics pass and of the test, with the CPU's name.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from pathlib import Path

from anomalib.data import MVTecAD
from anomalib.data.utils import random_split
from anomalib.engine import Engine
from common import clock_statistics  # the benchmarks' shared helpers

from fegan_anomalib import Fegan
from fegan_anomalib.experiments.compare import cpu_name


class _FittedImages(MVTecAD):
    """anomalib's MVTecAD with the training set cut to the part a ``PlantedValidation`` run fitted.

    With ``test_category``, the test (and so validation, ``same_as_test``) images are that set's.
    """

    def __init__(self, holdout_ratio: float, split_seed: int, test_category: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.holdout_ratio, self.split_seed, self.test_category = holdout_ratio, split_seed, test_category

    def _setup(self, _stage: str | None = None) -> None:
        super()._setup(_stage)
        self.train_data, _ = random_split(self.train_data, self.holdout_ratio, seed=self.split_seed)
        if self.test_category:
            other = MVTecAD(root=self.root, category=self.test_category, num_workers=0)
            other.setup()
            self.test_data = other.test_data


def main() -> None:
    """Load, drop the statistics, test through anomalib's Engine; append the figures to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--category", required=True, help="the set the checkpoint was fitted on")
    parser.add_argument("--test-category", help="test on this set instead (its own training images are not used)")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--seed", type=int, required=True, help="the run's PlantedValidation seed (its split)")
    parser.add_argument("--holdout-ratio", type=float, default=0.2)
    parser.add_argument("--model-args", default="{}", help="JSON of scoring arguments (feature_distance, ...)")
    parser.add_argument("--in-sample", action="store_true", help="per-cell half standardised in-sample (0.3.0.dev0)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(format="%(message)s")
    logging.getLogger("fegan_anomalib").setLevel(logging.INFO)  # the model's "measuring the scoring statistics" line
    model_args = json.loads(args.model_args)
    model = Fegan.load_from_checkpoint(args.checkpoint, map_location="cpu", visualizer=False, **model_args)
    model.model.anomaly_map_generator.reset_statistics()  # measured again when the test starts, as by anomalib test
    seconds = {"statistics": 0.0}

    def add_statistics_seconds(passed: float) -> None:
        seconds["statistics"] += passed

    clock_statistics(add_statistics_seconds, leave_out=not args.in_sample)
    datamodule = _FittedImages(
        args.holdout_ratio,
        args.seed,
        args.test_category,
        root=args.root,
        category=args.category,
        train_batch_size=8,
        eval_batch_size=16,
        num_workers=0,
        seed=args.seed,
    )
    start = time.perf_counter()
    (metrics,) = Engine(default_root_dir=args.out.parent / "engine", logger=False, enable_progress_bar=False).test(
        model, datamodule=datamodule
    )
    row = {
        "set": args.test_category or args.category,
        "fitted_on": args.category,
        "seed": args.seed,
        # the image score's map as scored (typed, else the checkpoint's): new fits record F, those before 0.4 S [A8c]
        "setting": json.dumps(
            {
                **model_args,
                "image_score_from": model.model.anomaly_map_generator.image_score_from,
                **({"per_cell": "in-sample"} if args.in_sample else {}),
            }
        ),
        "image_AUROC": round(metrics["image_AUROC"], 4),
        "pixel_AUROC": round(metrics["pixel_AUROC"], 4),
        "pixel_AUPRO": round(metrics["pixel_AUPRO"], 4),
        "statistics_s": round(seconds["statistics"], 1),
        "test_s": round(time.perf_counter() - start, 1),
        "cpu": cpu_name(),
    }
    print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new = not args.out.exists()
    with args.out.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    main()
