"""Accuracy of FEGAN's OpenVINO exports: FP32 vs FP16 vs INT8 post-training quantisation.

    python benchmarks/compression.py CKPT --root ../shared/data --category magnetic_tile \
        [--model-args '{"backbone": "vgg16_bn", "tap": "relu4_3", ...}']

Loads a trained FEGAN checkpoint, exports it three ways with anomalib (INT8 calibrated on the
category's training images, anomalib's ``compression_type=int8_ptq``), runs every test image through
each with ``OpenVINOInferencer`` and prints image and pixel AUROC per variant and the change
against FP32, plus ms/image at batch 1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import openvino_variants  # the benchmarks' shared helpers
from PIL import Image
from sklearn.metrics import roc_auc_score


def main() -> None:
    """Export, evaluate and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--model-args", default="{}", help="JSON of Fegan arguments the checkpoint was trained with")
    args = parser.parse_args()

    from anomalib.data import MVTecAD  # noqa: PLC0415
    from anomalib.data.utils import read_image, read_mask  # noqa: PLC0415
    from anomalib.deploy import OpenVINOInferencer  # noqa: PLC0415

    from fegan_anomalib import Fegan  # noqa: PLC0415
    from fegan_anomalib.deploy.infer import resize_like_training  # noqa: PLC0415

    model = Fegan.load_from_checkpoint(args.checkpoint, **json.loads(args.model_args)).eval()
    size = model.input_size
    datamodule = MVTecAD(root=args.root, category=args.category, num_workers=0, train_batch_size=8)
    test_dir = args.root / args.category / "test"
    images = sorted(test_dir.glob("*/*.png"))
    labels = np.array([p.parent.name != "good" for p in images], dtype=int)
    masks = []
    for path in images:
        mask_path = args.root / args.category / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
        masks.append(
            read_mask(mask_path) > 0 if mask_path.exists() else np.zeros(read_image(path).shape[:2], dtype=bool)
        )
    variants = openvino_variants(int8=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, compression, config) in enumerate(variants):
            xml = model.to_openvino(
                export_root=Path(folder) / str(index), compression_type=compression, datamodule=datamodule
            )
            inferencer = OpenVINOInferencer(xml, device="CPU", config=config)
            scores, pixel_scores, pixel_truth, seconds = [], [], [], 0.0
            for path, mask in zip(images, masks, strict=True):
                image = resize_like_training(read_image(path).astype(np.float32), tuple(size))  # as fegan-infer does
                start = time.perf_counter()
                prediction = inferencer.predict(image)
                seconds += time.perf_counter() - start
                scores.append(float(np.asarray(prediction.pred_score).reshape(-1)[0]))
                anomaly_map = np.asarray(prediction.anomaly_map).squeeze()
                small = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(tuple(size)[::-1], Image.NEAREST))
                pixel_scores.append(anomaly_map.reshape(-1))
                pixel_truth.append(small.reshape(-1) > 0)
            image_auroc = roc_auc_score(labels, scores)
            pixel_auroc = roc_auc_score(np.concatenate(pixel_truth), np.concatenate(pixel_scores))
            rows.append((name, image_auroc, pixel_auroc, 1000 * seconds / len(images)))
    print(f"{args.category}: {len(images)} test images ({labels.sum()} anomalous), model input {tuple(size)}")
    print("| export | image AUROC | pixel AUROC | Δ image vs FP32 | ms/image (batch 1) |")
    print("|---|---|---|---|---|")
    for name, image_auroc, pixel_auroc, ms in rows:
        print(f"| {name} | {image_auroc:.4f} | {pixel_auroc:.4f} | {image_auroc - rows[0][1]:+.4f} | {ms:.1f} |")


if __name__ == "__main__":
    main()
