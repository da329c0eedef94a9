"""Score one trained FEGAN checkpoint with F as Eq. 6's L2 norm and as the per-cell Mahalanobis distance.

``feature_distance`` changes scoring only, not the weights, so both are measured on the same trained
encoder: the training-image statistics each needs (``train_stats`` moments; for ``mahalanobis`` also the
per-cell, per-channel residual moments) are taken here on the category's training images with the
model's own ``AnomalyMapGenerator``, as a fit's validation would, then the whole test set is scored.

    python benchmarks/feature_distance.py --root datasets --category magnetic_tile \
        --checkpoint curves/s42/fegan/Fegan/MVTecAD/magnetic_tile/v0/weights/lightning/model.ckpt

Prints one Markdown row per distance: S (λ from the checkpoint) image / pixel AUROC and AUPRO, F alone;
and, as the reference for what the trained encoder adds, the FEN's own features whitened the same way.
"""

from __future__ import annotations

import argparse
import os

import torch
from anomalib.data import MVTecAD
from anomalib.metrics.aupro import _AUPRO
from torch.nn import functional as F  # noqa: N812

from fegan_anomalib import Fegan
from fegan_anomalib.metrics import map_aurocs
from fegan_anomalib.models.fegan.anomaly_map import AnomalyMapGenerator

FEN_ALONE = "FEN alone, whitened (no GAN; F columns)"


@torch.no_grad()
def features(model: Fegan, loader: torch.utils.data.DataLoader) -> dict[str, torch.Tensor]:
    """Images in [-1, 1], reconstructions, FEN and encoder features, labels and masks (model's size) of every batch."""
    out: dict[str, list[torch.Tensor]] = {key: [] for key in ("images", "reconstruction", "fen", "encoder")}
    out |= {"label": [], "mask": []}
    net = model.model
    with net.evaluating():
        for batch in loader:
            images = model.pre_processor.transform(batch.image)
            encoder, reconstruction = net.generate(images)
            out["fen"].append(net.fen_features(images))
            out["encoder"].append(encoder)
            out["images"].append(net.to_gan_range(images))
            out["reconstruction"].append(reconstruction)
            out["label"].append(batch.gt_label)
            if batch.gt_mask is not None:
                size = images.shape[-2:]
                out["mask"].append(F.interpolate(batch.gt_mask[:, None].float(), size=size, mode="nearest")[:, 0])
    return {key: torch.cat(values) for key, values in out.items() if values}


def without_encoder(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the same data with the encoder's features set to zero."""
    return {**data, "encoder": torch.zeros_like(data["encoder"])}


def score(generator: AnomalyMapGenerator, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Return S and the unstandardised F and R of ``data`` under ``generator``: the model's own scoring step."""
    residual, feature = generator.components(data["images"], data["reconstruction"], data["fen"], data["encoder"])
    return generator.fuse(residual, feature), feature, residual


def main() -> None:
    """Measure the statistics on the training images, score the test set both ways, print the rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--checkpoint", required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = Fegan.load_from_checkpoint(args.checkpoint, map_location="cpu")
    datamodule = MVTecAD(root=args.root, category=args.category, eval_batch_size=16, train_batch_size=16)
    datamodule.num_workers = 0
    datamodule.setup("fit")
    datamodule.setup("test")
    train, test = features(model, datamodule.train_dataloader()), features(model, datamodule.test_dataloader())
    size = tuple(test["images"].shape[-2:])
    trained = model.model.anomaly_map_generator
    print(f"{args.category}: {len(train['fen'])} training / {len(test['fen'])} test images, {size[0]}²")
    print("| F distance | S image AUROC | S pixel AUROC | S AUPRO | F image AUROC | F pixel AUROC |")
    print("|---|---|---|---|---|---|")
    rows = (("l2", "l2", True), ("mahalanobis", "mahalanobis", True), (FEN_ALONE, "mahalanobis", False))
    for name, distance, with_encoder in rows:
        # FEN alone: θ(x) taken as 0, so F whitens the FEN's own features (PaDiM's statistic on one layer, no GAN)
        fit, evaluate = (train, test) if with_encoder else (without_encoder(train), without_encoder(test))
        generator = AnomalyMapGenerator(
            trained.feature_map_weight, "train_stats", feature_distance=distance, feature_shape=fit["fen"].shape[1:]
        )
        if distance == "mahalanobis":
            moments = generator.feature_residual_moments(fit["fen"], fit["encoder"])
            generator.set_feature_residual_stats(moments, len(fit["fen"]))
        _, train_feature, train_residual = score(generator, fit)
        generator.set_train_stats_from_moments(generator.moments(train_residual, train_feature), use_fen=True)
        anomaly_map, feature, _ = score(generator, evaluate)
        mask, label = test["mask"].bool(), test["label"]
        aupro = _AUPRO()
        aupro.update(anomaly_map, mask.int())
        cells = [*map_aurocs(anomaly_map, label, mask), float(aupro.compute()), *map_aurocs(feature, label, mask)]
        print(f"| {name} | " + " | ".join(f"{value:.3f}" for value in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
