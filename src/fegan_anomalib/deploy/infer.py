"""``fegan-infer MODEL.xml FOLDER --out DIR``: edge inference over a folder with OpenVINO.

Runs anomalib's ``OpenVINOInferencer`` on every image of a folder and writes, per image, one PNG
with the original at its own resolution beside the heat map resized to it (per-image min-max,
Eq. 9 of the paper) and one row of ``predictions.csv`` (size, score, label; ``--threshold`` moves
the decision line without re-exporting). A file that cannot be read is not skipped silently: it
gets a row with its error, is listed at the end, and the other images are still processed; the
exit status is 1 when any file failed. Needs only OpenVINO, NumPy and Pillow at run time (no torch
on the edge box path).

Each image is resized to the model's input size here, with Pillow's bilinear filter, which equals the
antialiased ``Resize`` the model was trained and tested with (to 1e-6); the exported graph's own resize
then has nothing to do. Why: anomalib's export swaps that resize for a non-antialiased one (ONNX has no
antialiased resize), so a full-size image sent to the graph is not the image the statistics were measured
on; with the per-cell Mahalanobis default, a model fitted on few images scored every normal part as a defect
that way (tests/test_export.py). Callers of ``OpenVINOInferencer`` on their own should resize likewise.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fegan_anomalib.image_io import EXTENSIONS, load_rgb


def heat_map_overlay(image: np.ndarray, anomaly_map: np.ndarray) -> Image.Image:
    """Blend a jet-coloured, per-image min-max normalised anomaly map over the image, at the image's size.

    The map (model resolution) is resized bilinearly to the image, so a defect is seen at the size it
    was photographed, not at the model's input size.
    """
    from matplotlib import colormaps  # noqa: PLC0415 - only when writing figures

    height, width = image.shape[:2]
    resized = np.asarray(Image.fromarray(anomaly_map.astype(np.float32)).resize((width, height), Image.BILINEAR))
    span = float(resized.max() - resized.min())
    normalised = (resized - resized.min()) / span if span > 0 else np.zeros_like(resized)
    heat = colormaps["jet"](normalised)[..., :3]
    return Image.fromarray((0.5 * image * 255 + 0.5 * heat * 255).astype(np.uint8))


def side_by_side(image: np.ndarray, anomaly_map: np.ndarray) -> Image.Image:
    """Put the original at its own resolution beside the heat map resized to it (one PNG per image)."""
    original = Image.fromarray((image * 255).round().astype(np.uint8))
    overlay = heat_map_overlay(image, anomaly_map)
    canvas = Image.new("RGB", (original.width * 2 + 8, original.height), "white")
    canvas.paste(original, (0, 0))
    canvas.paste(overlay, (original.width + 8, 0))
    return canvas


PRECISIONS = {"auto": None, "f32": "f32", "bf16": "bf16", "f16": "f16"}


def model_input_size(model: Path) -> tuple[int, int]:
    """Return the (H, W) the exported model was trained at: its ``anomaly_map`` output's fixed size."""
    import openvino as ov  # noqa: PLC0415

    for output in ov.Core().read_model(model).outputs:
        if "anomaly_map" in output.get_names() and output.get_partial_shape()[1:].is_static:
            height, width = (int(dim.get_length()) for dim in output.get_partial_shape()[1:])
            return height, width
    msg = f"{model} has no anomaly_map output of fixed size; export it with `anomalib export --model FEGAN ...`."
    raise ValueError(msg)


def resize_like_training(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) float image as the training ``Resize(antialias=True)`` does (Pillow's bilinear)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32), mode="F").resize(
                (width, height), Image.BILINEAR
            )
        )
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1)


def run(
    model: Path,
    folder: Path,
    out: Path,
    device: str = "CPU",
    precision: str = "auto",
    threshold: float | None = None,
) -> list[tuple[Path, str]]:
    """Predict every image of ``folder``; return the files that failed, with their reasons.

    ``precision`` is OpenVINO's ``INFERENCE_PRECISION_HINT``: ``auto`` lets OpenVINO choose (bfloat16
    on CPUs that have it, the fastest), ``f32`` gives the torch model's scores exactly.
    ``threshold`` moves the decision line on the exported score, which anomalib's post-processor
    normalises so that the threshold learnt at validation sits at 0.5: ``None`` keeps the model's own,
    a higher value flags fewer images.
    """
    from anomalib.deploy import OpenVINOInferencer  # noqa: PLC0415

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        msg = f"No images ({', '.join(EXTENSIONS)}) in {folder}."
        raise FileNotFoundError(msg)
    if precision not in PRECISIONS:
        msg = f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'."
        raise ValueError(msg)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        msg = f"threshold is on the exported model's normalised score scale [0, 1] (its own is 0.5), got {threshold}."
        raise ValueError(msg)
    hint = PRECISIONS[precision]
    inferencer = OpenVINOInferencer(model, device=device, config={"INFERENCE_PRECISION_HINT": hint} if hint else None)
    size = model_input_size(model)
    out.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[Path, str]] = []
    with (out / "predictions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "width", "height", "pred_score", "pred_label", "heat_map", "error"])
        for path in files:
            try:
                image = load_rgb(path)
            except (OSError, ValueError, UnidentifiedImageError) as error:
                failed.append((path, str(error)))
                writer.writerow([path, "", "", "", "", "", f"unreadable: {error}"])
                continue
            prediction = inferencer.predict(resize_like_training(image, size))
            target = out / path.relative_to(folder).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            side_by_side(image, np.asarray(prediction.anomaly_map).squeeze()).save(target)
            score = float(np.asarray(prediction.pred_score).reshape(-1)[0])
            label = int(np.asarray(prediction.pred_label).reshape(-1)[0])
            if threshold is not None:
                label = int(score > threshold)
            writer.writerow([path, image.shape[1], image.shape[0], f"{score:.6f}", label, target, ""])
    return failed


def main(argv: list[str] | None = None) -> None:
    """``fegan-infer MODEL FOLDER --out DIR``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="exported OpenVINO model (model.xml) or ONNX file")
    parser.add_argument("folder", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("predictions"))
    parser.add_argument("--device", default="CPU")
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="auto",
        help="OpenVINO compute precision: auto (OpenVINO's choice: bf16 where the CPU has it, fastest) or f32 "
        "(scores equal to the torch model's)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision line on the normalised pred_score, 0-1 (default: the model's own, learnt at validation, "
        "which the export puts at 0.5); higher flags fewer images",
    )
    args = parser.parse_args(argv)
    failed = run(args.model, args.folder, args.out, args.device, args.precision, args.threshold)
    print(f"predictions: {args.out / 'predictions.csv'}; heat maps under {args.out}")
    if failed:
        print(f"{len(failed)} file(s) could not be read and have no prediction:")
        for path, reason in failed:
            print(f"  {path}: {reason}")
        sys.exit(1)


if __name__ == "__main__":
    main()
