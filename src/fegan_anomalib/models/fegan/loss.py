"""FEGAN losses (Eq. 1-5).

``L_fea`` pulls the encoder's features of the augmented image onto the frozen FEN's features of
the clean one; ``L_con`` pulls the reconstruction onto the clean image; ``L_adv`` is the
non-saturating GAN loss **[A6]** on logits (``BCEWithLogits``: numerically safe under autocast),
or, as an option, GANomaly's feature matching (the squared distance between the discriminator's
last features of the real image and of the reconstruction).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

ADVERSARIAL_LOSSES = ("bce", "feature_matching")


class GeneratorLoss(nn.Module):
    """``L_G = λ_fea·L_fea + λ_con·L_con + λ_adv·L_adv`` (Eq. 5), each term also returned for logging.

    Args:
        lambda_fea: weight of the feature loss. Defaults to ``30``.
        lambda_con: weight of the content loss. Defaults to ``30``.
        lambda_adv: weight of the adversarial loss. Defaults to ``1``.
        adversarial: ``"bce"`` (the paper's non-saturating GAN loss on D's logit of G(x̃)) or
            ``"feature_matching"`` (GANomaly's: mean squared distance of D's features of x and G(x̃));
            the adversarial input given to ``forward`` is then a logit tensor or a (real, fake) pair.

    Example:
        >>> loss = GeneratorLoss()
        >>> image = torch.zeros(1, 3, 8, 8)
        >>> total, terms = loss(image, image, None, torch.zeros(1, 4, 1, 1), None)
        >>> float(total), sorted(terms)
        (0.0, ['content_loss'])

    """

    def __init__(
        self,
        lambda_fea: float = 30.0,
        lambda_con: float = 30.0,
        lambda_adv: float = 1.0,
        adversarial: str = "bce",
    ) -> None:
        super().__init__()
        if adversarial not in ADVERSARIAL_LOSSES:
            msg = f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got '{adversarial}'."
            raise ValueError(msg)
        self.adversarial = adversarial
        self.lambda_fea = lambda_fea
        self.lambda_con = lambda_con
        self.lambda_adv = lambda_adv

    @staticmethod
    def feature_loss(fen_features: torch.Tensor, encoder_features: torch.Tensor) -> torch.Tensor:
        """Eq. 1: ``mean_ij ‖θ*(x)_ij − θ(x̃)_ij‖₂``, the L2 distance over channels averaged over positions.

        The same per-location distance the score's F map uses (Eq. 6), so training lowers exactly what
        the score measures. Why not a mean of squares over every element (an earlier reading): at a VGG
        tap that sits at ~0.01, so ``λ_fea·L_fea ≈ 0.3`` beside ``L_adv ≈ 11-14`` and the encoder barely
        leaves the FEN copy (magnetic_tile, 128², stand-in VGG16-BN: F-only image AUROC 0.39-0.51 after
        1-3 epochs, 0.65 with this form after one). The FEN side carries no gradient. Summed in float32
        under bf16/fp16 autocast (a 512-channel sum of squares in bf16 keeps 8 bits).
        """
        difference = encoder_features.float() - fen_features.detach().float()
        # sqrt has an infinite derivative at 0: an encoder equal to the FEN (step 0, clean input) would
        # give NaN gradients, so the norm is taken of the squares plus a tiny floor
        return (difference.square().sum(dim=1) + 1e-12).sqrt().mean()

    @staticmethod
    def content_loss(images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Eq. 2: ``mean|x − G(x̃)|`` against the clean image in [-1, 1], whole frame."""
        return F.l1_loss(reconstruction.float(), images.float())

    @staticmethod
    def adversarial_loss(adversarial: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Eq. 3-4 **[A6]**: non-saturating ``BCE(D(G(x̃)), 1)`` on logits, or feature matching on a pair.

        Feature matching (GANomaly) takes ``(D_features(x), D_features(G(x̃)))``; the real side carries
        no gradient.
        """
        if isinstance(adversarial, tuple):
            real_features, fake_features = adversarial
            return F.mse_loss(fake_features.float(), real_features.detach().float())
        adversarial = adversarial.float()
        return F.binary_cross_entropy_with_logits(adversarial, torch.ones_like(adversarial))

    def forward(
        self,
        images: torch.Tensor,
        reconstruction: torch.Tensor,
        fen_features: torch.Tensor | None,
        encoder_features: torch.Tensor,
        fake_logits: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the weighted total and the unweighted terms; a ``None`` input switches its term off."""
        terms = {"content_loss": self.content_loss(images, reconstruction)}
        if fen_features is not None:
            terms["feature_loss"] = self.feature_loss(fen_features, encoder_features)
        if fake_logits is not None:
            terms["adversarial_loss"] = self.adversarial_loss(fake_logits)
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, terms

    def adversarial_input(
        self,
        discriminator: nn.Module | None,
        real: torch.Tensor,
        reconstruction: torch.Tensor,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
        """Return what the adversarial term reads: D's logits of G(x̃) (``bce``), or D's features of (x, G(x̃))."""
        if discriminator is None:
            return None
        if self.adversarial == "feature_matching":
            return discriminator.features(real).detach(), discriminator.features(reconstruction)
        return discriminator(reconstruction)

    def gradient_norms(
        self,
        terms: dict[str, torch.Tensor],
        encoder_features: torch.Tensor,
        reconstruction: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Norm of each weighted term's gradient at the encoder's output and at the decoder's output.

        Which term steers the generator is a question of gradients, not of loss values: the
        adversarial term can be large and still push weakly. Measured at the two activations
        (not the weights) so it costs a backward through decoder and discriminator only; the graph
        is kept for the real backward. Keys: ``grad_norm/<term>_at_encoder`` / ``..._at_decoder``.
        """
        norms = {}
        for name, term in terms.items():
            at_encoder, at_decoder = torch.autograd.grad(
                self.weights[name] * term,
                [encoder_features, reconstruction],
                retain_graph=True,
                allow_unused=True,
            )
            short = name.removesuffix("_loss")
            for where, gradient in (("encoder", at_encoder), ("decoder", at_decoder)):
                if gradient is None:  # the term does not reach this activation
                    value = torch.zeros((), device=reconstruction.device)
                else:
                    value = torch.linalg.vector_norm(gradient.detach().float())
                norms[f"grad_norm/{short}_at_{where}"] = value
        return norms

    @property
    def weights(self) -> dict[str, float]:
        """λ of each term by its name in ``forward``'s terms (Eq. 5)."""
        return {"feature_loss": self.lambda_fea, "content_loss": self.lambda_con, "adversarial_loss": self.lambda_adv}


class DiscriminatorLoss(nn.Module):
    """**[A6]** ``BCE(D(x), 1) + BCE(D(G(x̃).detach()), 0)`` on logits."""

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Return the discriminator loss."""
        real_logits, fake_logits = real_logits.float(), fake_logits.float()  # float32 under autocast
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real + fake
