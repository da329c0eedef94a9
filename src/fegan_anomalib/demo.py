"""``fegan-demo``: the README's main job, a full FEGAN run with nothing to download.

It writes the seeded synthetic MVTec-layout data set (if missing), then runs the stock
``anomalib train --config configs/fegan_cpu.yaml`` through anomalib's own CLI class — so the demo
exercises exactly the path a user takes — prints the test metrics and where the heat maps are, and
writes the run's ``report.html``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .data.synthetic import make_synthetic_dataset


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
    print()
    print(f"FEGAN on synthetic '{args.category}' ({args.config}):")
    for key in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "image_F1Score", "pixel_F1Score"):
        if key in metrics:
            print(f"  {key:14s} {metrics[key]:.3f}")
    if cli.model.visualizer is not None:
        print(f"heat maps: {Path(cli.model.visualizer.output_dir).resolve()}")
    print(f"checkpoint: {Path(cli.engine.trainer.checkpoint_callback.best_model_path or '').resolve()}")
    run_dir = Path(cli.engine.trainer.default_root_dir)
    print(f"learning curves: {(run_dir / 'learning_curves.png').resolve()}")
    from .experiments.run_report import write_run_report  # noqa: PLC0415

    print(f"report: {write_run_report(run_dir).resolve()}  (again, for any run: fegan-report {run_dir})")


if __name__ == "__main__":
    main()
