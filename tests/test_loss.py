"""FEGAN's losses on hand-computed answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fegan_anomalib.models.fegan.loss import DiscriminatorLoss, GeneratorLoss


def test_feature_loss_is_the_mean_per_location_l2_distance() -> None:
    fen = torch.zeros(1, 2, 1, 2)
    encoder = torch.tensor([[[[3.0, 0.0]], [[4.0, 1.0]]]])  # channel vectors (3, 4) and (0, 1) at the two positions
    # Eq. 1: ||(3, 4)|| = 5 and ||(0, 1)|| = 1, mean over positions 3 (a mean of squares would give 6.5)
    assert float(GeneratorLoss.feature_loss(fen, encoder)) == pytest.approx(3.0)


def test_feature_loss_gradient_is_finite_at_zero_distance_and_skips_the_fen() -> None:
    fen = torch.ones(2, 4, 3, 3, requires_grad=True)
    encoder = torch.ones(2, 4, 3, 3, requires_grad=True)
    GeneratorLoss.feature_loss(fen, encoder).backward()
    assert torch.isfinite(encoder.grad).all()
    assert fen.grad is None


def test_generator_total_weights_each_term() -> None:
    images = torch.zeros(1, 3, 4, 4)
    reconstruction = torch.full((1, 3, 4, 4), 0.5)  # L_con = 0.5
    fen, encoder = torch.zeros(1, 2, 1, 1), torch.tensor([[[[3.0]], [[4.0]]]])  # L_fea = 5
    logits = torch.zeros(1)  # L_adv = log 2
    total, terms = GeneratorLoss(2.0, 3.0, 4.0)(images, reconstruction, fen, encoder, logits)
    assert float(terms["content_loss"]) == pytest.approx(0.5)
    assert float(terms["feature_loss"]) == pytest.approx(5.0)
    assert float(terms["adversarial_loss"]) == pytest.approx(0.6931, abs=1e-4)
    assert float(total) == pytest.approx(2 * 5 + 3 * 0.5 + 4 * 0.6931, abs=1e-3)


def test_feature_matching_adversarial_term_and_discriminator_loss() -> None:
    real, fake = torch.zeros(2, 3, 2, 2), torch.full((2, 3, 2, 2), 2.0)
    loss = GeneratorLoss(adversarial="feature_matching")
    assert float(loss.adversarial_loss((real, fake))) == pytest.approx(4.0)
    assert float(DiscriminatorLoss()(torch.zeros(3), torch.zeros(3))) == pytest.approx(2 * 0.6931, abs=1e-4)
    with pytest.raises(ValueError, match="adversarial_loss"):
        GeneratorLoss(adversarial="wasserstein")


def test_gradient_shares_known_answer() -> None:
    # encoder p, decoder q; λ_fea·L_fea = 2·(p·a) reaches p only, λ_con·L_con = 3·(p·b + q·c) reaches both
    p, q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    a, b, c = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.0, 2.0])
    loss = GeneratorLoss(lambda_fea=2.0, lambda_con=3.0)
    terms = {"feature_loss": (p * a).sum(), "content_loss": (p * b).sum() + (q * c).sum()}
    shares = loss.gradient_shares(terms, [p], [q])
    g_fea, g_con = torch.tensor([2.0, 0.0]), torch.tensor([3.0, 3.0])  # at the encoder
    g = g_fea + g_con
    assert float(shares["grad_share/feature_at_encoder"]) == pytest.approx(float(g_fea @ g / (g @ g)))
    assert float(shares["grad_share/content_at_encoder"]) == pytest.approx(float(g_con @ g / (g @ g)))
    assert float(shares["grad_cos/feature_content_at_encoder"]) == pytest.approx(2**-0.5)
    assert float(shares["grad_share/content_at_decoder"]) == pytest.approx(1.0)  # the only term there
    assert "grad_share/feature_at_decoder" not in shares


def test_gradient_shares_move_when_the_weights_change() -> None:
    # 0.1's grad_norm/feature_at_encoder was λ/√(B·h·w) whatever the weights; the shares must not be constant
    from fegan_anomalib.models.fegan.torch_model import FeganModel

    torch.manual_seed(0)  # the paper's cut, as when this was measured (the default tap is block 4's since 0.3)
    model = FeganModel((32, 32), pre_trained=False, channels_last=False, tap="relu5_4").train()
    images = torch.rand(2, 3, 32, 32)
    loss = GeneratorLoss(adversarial="feature_matching")

    def shares() -> dict[str, float]:
        output = model(images, images)
        real = model.to_gan_range(images)
        adversarial = loss.adversarial_input(model.discriminator, real, output.reconstruction)
        _, terms = loss(real, output.reconstruction, output.fen_features, output.encoder_features, adversarial)
        encoder, decoder = list(model.encoder.parameters()), list(model.decoder.parameters())
        return {k: float(v) for k, v in loss.gradient_shares(terms, encoder, decoder).items()}

    before = shares()
    with torch.no_grad():
        for parameter in model.encoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    after = shares()
    assert set(before) == set(after)
    moved = [key for key in before if abs(before[key] - after[key]) > 1e-3]
    assert "grad_share/feature_at_encoder" in moved, (before, after)
