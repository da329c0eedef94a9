"""``fegan-demo``: the README's main job, a full FEGAN run with nothing to download.

It writes the seeded synthetic MVTec-layout data set (if missing), then runs the stock
``anomalib train --config configs/fegan_cpu.yaml`` through anomalib's own CLI class — so the demo
exercises exactly the path a user takes — prints the test metrics and where the heat maps are, and
writes the run's ``report.html``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import NamedTuple

from .data.synthetic import make_synthetic_dataset

# what the demo is expected to reach (README's Quick start); printed beside what it got
EXPECTED_AUROC = 0.95


class Detections(NamedTuple):
    """Per-part decisions of one test run, from its ``test_predictions.csv``."""

    defective: int
    good: int
    at_zero_false_alarms: int  # defective parts scored above every good part
    at_threshold: int  # defective parts flagged at the threshold anomalib's PostProcessor chose on validation
    false_alarms: int  # good parts flagged at that threshold


def detections(predictions: Path) -> Detections:
    """Count the defective parts found at zero false alarms and at the validation threshold."""
    with predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    good = [float(row["pred_score"]) for row in rows if row["gt_label"] == "0"]
    defective = [row for row in rows if row["gt_label"] == "1"]
    highest_good = max(good, default=float("-inf"))
    return Detections(
        defective=len(defective),
        good=len(good),
        at_zero_false_alarms=sum(float(row["pred_score"]) > highest_good for row in defective),
        at_threshold=sum(row["pred_label"] == "1" for row in defective),
        false_alarms=sum(row["pred_label"] == "1" for row in rows if row["gt_label"] == "0"),
    )


def positional_prior_pixel_auroc(category_root: Path, image_size: int) -> float:
    """Pixel AUROC of a map that says only "defects sit near the centre" (minus the distance to it): no model.

    A data set whose defects cluster in the middle rewards any centre-heavy map; the demo prints this
    baseline beside the model's figure so a reader sees what the model adds.
    """
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from .metrics import rank_auroc  # noqa: PLC0415

    grid = (np.arange(image_size) + 0.5) / image_size - 0.5
    prior = torch.from_numpy(-np.hypot(*np.meshgrid(grid, grid, indexing="ij")))
    masks = []
    for image in sorted((category_root / "test").glob("*/*.png")):
        mask_path = category_root / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"
        if image.parent.name == "good" or not mask_path.is_file():
            masks.append(torch.zeros(image_size, image_size, dtype=torch.bool))
        else:
            mask = Image.open(mask_path).convert("L").resize((image_size, image_size), Image.NEAREST)
            masks.append(torch.from_numpy(np.asarray(mask) > 127))
    stacked = torch.stack(masks)
    return rank_auroc(prior.expand_as(stacked), stacked)


def seeded_cli() -> type:
    """Return anomalib's CLI class with its ``seed_everything`` applied before the model and the data are built.

    anomalib 2.7's CLI declares ``--seed_everything`` (the configs set 42) but never applies it, so two runs
    of one config train different models. The seed is read from the parsed arguments (config file and
    overrides, as jsonargparse resolved them); ``True`` (anomalib's "random seed") leaves the run unseeded.
    """
    from anomalib.cli import AnomalibCLI  # noqa: PLC0415 - heavy; only once the arguments are valid
    from lightning.pytorch import seed_everything  # noqa: PLC0415

    class SeededCLI(AnomalibCLI):
        def before_instantiate_classes(self) -> None:
            super().before_instantiate_classes()
            seed = self.config[self.subcommand].get("seed_everything")
            if not isinstance(seed, bool) and seed is not None:
                seed_everything(seed, workers=True)

    return SeededCLI


def main(argv: list[str] | None = None) -> None:
    """Run the demo and print what it found.

    No warning filter of its own: the third-party warnings a FEGAN run would print are silenced where they arise
    (anomalib's import in the start-up hook, Lightning's during a fit in ``Fegan.setup``), for every path alike.
    """
    run(argv)


def run(argv: list[str] | None = None) -> None:
    """Run the demo and print the test metrics and the heat-map folder."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/fegan_cpu.yaml"))
    parser.add_argument("--root", type=Path, default=Path("datasets/fegan_synthetic"))
    parser.add_argument("--category", default="texture", choices=["texture", "object"])
    parser.epilog = "Any further arguments go to anomalib's CLI, e.g. --trainer.max_epochs 2 --model.image_size 64."
    args, overrides = parser.parse_known_args(argv)  # in their order, for anomalib's CLI
    if not args.config.is_file():
        parser.error(f"config {args.config} not found; run from the repository root or pass --config PATH")
    if not (args.root / args.category).is_dir():
        make_synthetic_dataset(args.root)
        print(f"wrote the synthetic data set to {args.root}")

    cli = seeded_cli()(
        [
            "train",
            "--config",
            str(args.config),
            "--data.root",
            str(args.root),
            "--data.category",
            args.category,
            *overrides,
        ],
    )
    metrics = {key: float(value) for key, value in cli.engine.trainer.callback_metrics.items() if "_" in key}
    run_dir = Path(cli.engine.trainer.default_root_dir)
    found = detections(run_dir / "test_predictions.csv")
    prior = positional_prior_pixel_auroc(args.root / args.category, cli.model.model.image_size[0])
    print()
    print(f"FEGAN on synthetic '{args.category}' ({args.config}):")
    print(
        f"  detected {found.at_zero_false_alarms} of {found.defective} defective images at 0 false alarms "
        f"(of {found.good} good); at the validation threshold {found.at_threshold} of {found.defective}, "
        f"{found.false_alarms} false alarm(s)"
    )
    print(
        f"  image AUROC {metrics.get('image_AUROC', float('nan')):.3f} (chance 0.5), pixel AUROC "
        f"{metrics.get('pixel_AUROC', float('nan')):.3f} (positional prior, no model: {prior:.3f}); "
        f"expected: both >= {EXPECTED_AUROC}"
    )
    for key in ("pixel_AUPRO", "image_F1Score", "pixel_F1Score"):
        if key in metrics:
            print(f"  {key:14s} {metrics[key]:.3f}")
    if cli.model.visualizer is not None:
        print(f"heat maps: {Path(cli.model.visualizer.output_dir).resolve()}")
    print(f"checkpoint: {Path(cli.engine.trainer.checkpoint_callback.best_model_path or '').resolve()}")
    print(f"learning curves: {(run_dir / 'learning_curves.png').resolve()}")
    from .experiments.run_report import write_run_report  # noqa: PLC0415

    print(f"report: {write_run_report(run_dir).resolve()}  (again, for any run: fegan-report {run_dir})")


if __name__ == "__main__":
    main()
