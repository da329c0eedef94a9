"""FEGAN losses (Eq. 1-5).

``L_fea`` pulls the encoder's features of the augmented image onto the frozen FEN's features of
the clean one; ``L_con`` pulls the reconstruction onto the clean image; ``L_adv`` is the
non-saturating GAN loss **[A6]** on logits (``BCEWithLogits``: numerically safe under autocast).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class GeneratorLoss(nn.Module):
    """``L_G = λ_fea·L_fea + λ_con·L_con + λ_adv·L_adv`` (Eq. 5), each term also returned for logging.

    Args:
        lambda_fea: weight of the feature loss. Defaults to ``30``.
        lambda_con: weight of the content loss. Defaults to ``30``.
        lambda_adv: weight of the adversarial loss. Defaults to ``1``.

    Example:
        >>> loss = GeneratorLoss()
        >>> image = torch.zeros(1, 3, 8, 8)
        >>> total, terms = loss(image, image, None, torch.zeros(1, 4, 1, 1), None)
        >>> float(total), sorted(terms)
        (0.0, ['content_loss'])

    """

    def __init__(self, lambda_fea: float = 30.0, lambda_con: float = 30.0, lambda_adv: float = 1.0) -> None:
        super().__init__()
        self.lambda_fea = lambda_fea
        self.lambda_con = lambda_con
        self.lambda_adv = lambda_adv

    @staticmethod
    def feature_loss(fen_features: torch.Tensor, encoder_features: torch.Tensor) -> torch.Tensor:
        """Eq. 1: ``mean((θ*(x) − θ(x̃))²)``; the FEN side carries no gradient."""
        return F.mse_loss(encoder_features, fen_features.detach())

    @staticmethod
    def content_loss(images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Eq. 2: ``mean|x − G(x̃)|`` against the clean image in [-1, 1], whole frame."""
        return F.l1_loss(reconstruction, images)

    @staticmethod
    def adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
        """Eq. 3-4 **[A6]**: the generator's non-saturating ``BCE(D(G(x̃)), 1)``."""
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))

    def forward(
        self,
        images: torch.Tensor,
        reconstruction: torch.Tensor,
        fen_features: torch.Tensor | None,
        encoder_features: torch.Tensor,
        fake_logits: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the weighted total and the unweighted terms; a ``None`` input switches its term off."""
        terms = {"content_loss": self.content_loss(images, reconstruction)}
        total = self.lambda_con * terms["content_loss"]
        if fen_features is not None:
            terms["feature_loss"] = self.feature_loss(fen_features, encoder_features)
            total = total + self.lambda_fea * terms["feature_loss"]
        if fake_logits is not None:
            terms["adversarial_loss"] = self.adversarial_loss(fake_logits)
            total = total + self.lambda_adv * terms["adversarial_loss"]
        return total, terms


class DiscriminatorLoss(nn.Module):
    """**[A6]** ``BCE(D(x), 1) + BCE(D(G(x̃).detach()), 0)`` on logits."""

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Return the discriminator loss."""
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real + fake
