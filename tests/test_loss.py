"""FEGAN's losses on hand-computed answers."""

from __future__ import annotations

import pytest
import torch

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
