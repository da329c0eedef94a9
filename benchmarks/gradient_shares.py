"""Which loss term steers FEGAN's generator: each term's share of the update, by adversarial form and weights.

For one batch of normal training images, at initialisation and with a trained checkpoint's weights, the
generator's loss is formed under each setting below and every weighted term's share of the update at the
encoder's and at the decoder's parameters is measured (``GeneratorLoss.gradient_shares``: ``s_t = ⟨g_t, g⟩ /
‖g‖²``, the shares sum to 1), with the cosine between the content and adversarial gradients at the decoder.

Settings: the adversarial term as the paper's non-saturating BCE or as feature matching (the default), at
λ_adv = 1, 0.1, 0.01 (the paper's Fig. 9 lever); and Eq. 2's content loss read as a per-image L1 norm
(the sum over 3·H·W elements) instead of the per-element mean **[A11]**, i.e. λ_con multiplied by 3·H·W.

    python benchmarks/gradient_shares.py --root datasets --category magnetic_tile --weights VGG16BN.pth \
        --checkpoint curves/magnetic_tile/s42/fegan/Fegan/MVTecAD/magnetic_tile/v0/weights/lightning/model.ckpt

Prints one Markdown row per (weights, setting).
"""

from __future__ import annotations

import argparse
import os

import torch
from anomalib.data import MVTecAD

from fegan_anomalib import Fegan
from fegan_anomalib.models.fegan.loss import GeneratorLoss

SETTINGS = (
    ("feature matching, λ_adv 1 (default)", "feature_matching", 1.0, 1.0),
    ("BCE, λ_adv 1 (paper)", "bce", 1.0, 1.0),
    ("BCE, λ_adv 0.1", "bce", 0.1, 1.0),
    ("BCE, λ_adv 0.01", "bce", 0.01, 1.0),
    ("feature matching, λ_adv 0.1", "feature_matching", 0.1, 1.0),
    ("BCE, L_con as per-image L1 norm", "bce", 1.0, None),  # None: λ_con x 3·H·W
)
COLUMNS = (
    "grad_share/feature_at_encoder",
    "grad_share/content_at_encoder",
    "grad_share/adversarial_at_encoder",
    "grad_share/content_at_decoder",
    "grad_share/adversarial_at_decoder",
    "grad_cos/content_adversarial_at_decoder",
)


def shares(model: Fegan, images: torch.Tensor, adversarial: str, lambda_adv: float, scale_con: float | None) -> dict:
    """Measure the shares and cosines on ``images`` (un-augmented: a measurement, not a training step)."""
    net = model.model
    net.train()
    output = net(images, images)
    real = net.to_gan_range(images)
    lambda_con = 30.0 * (scale_con if scale_con is not None else real[0].numel())
    loss = GeneratorLoss(30.0, lambda_con, lambda_adv, adversarial)
    adversarial_input = loss.adversarial_input(net.discriminator, real, output.reconstruction)
    _, terms = loss(real, output.reconstruction, output.fen_features, output.encoder_features, adversarial_input)
    values = loss.gradient_shares(terms, list(net.encoder.parameters()), list(net.decoder.parameters()))
    return {key: float(value) for key, value in values.items()}


def main() -> None:
    """Measure every setting at initialisation and with the checkpoint's weights; print the rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--weights", required=True, help="the stand-in VGG16-BN the checkpoint was trained with")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    datamodule = MVTecAD(root=args.root, category=args.category, train_batch_size=args.batch_size, num_workers=0)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    initial = Fegan(image_size=args.image_size, backbone="vgg16_bn", tap="relu5_2", weights=args.weights)
    initial.on_fit_start()  # reads the FEN's weights (and copies them into the encoder), as a fit does
    trained = Fegan.load_from_checkpoint(args.checkpoint, map_location="cpu")
    print("| weights | setting | " + " | ".join(c.split("/")[1] for c in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for label, model in (("initialisation", initial), ("trained", trained)):
        images = model.pre_processor.transform(batch.image)
        for name, adversarial, lambda_adv, scale_con in SETTINGS:
            values = shares(model, images, adversarial, lambda_adv, scale_con)
            cells = [f"{values[c]:.3f}" if c in values else "–" for c in COLUMNS]
            print(f"| {label} | {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
