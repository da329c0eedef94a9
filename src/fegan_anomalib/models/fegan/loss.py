"""FEGAN losses (Eq. 1-5).

``L_fea`` pulls the encoder's features of the augmented image onto the frozen FEN's features of
the clean one; ``L_con`` pulls the reconstruction onto the clean image; ``L_adv`` is the
non-saturating GAN loss **[A6]** on logits (``BCEWithLogits``: numerically safe under autocast),
or, as an option, GANomaly's feature matching (the squared distance between the discriminator's
last features of the real image and of the reconstruction).
"""

from __future__ import annotations

import itertools

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

    def gradient_shares(
        self,
        terms: dict[str, torch.Tensor],
        encoder_parameters: list[nn.Parameter],
        decoder_parameters: list[nn.Parameter],
    ) -> dict[str, torch.Tensor]:
        """Each weighted term's share of the generator's update, and the cosines between the terms' gradients.

        At the encoder's and at the decoder's *parameters*, with ``g_t`` the gradient of ``λ_t·L_t`` and
        ``g = Σ g_t`` the update's gradient: share ``s_t = ⟨g_t, g⟩ / ‖g‖²`` (the shares sum to 1; a negative
        share pulls against the update) and ``cos(g_a, g_b)`` for each pair of terms that reaches the group.
        Why not the norm of each term's gradient at the encoder's or decoder's *output* (0.1's ``grad_norm/*``):
        the gradient of a mean of per-location L2 norms, or of a mean absolute error, with respect to its
        input has a fixed length (``λ/√N``) whatever the weights, so those figures never moved. A term that
        does not reach a group (``L_fea`` and the decoder) gets no key there. Costs one backward through the
        generator per term; the graph is kept for the real backward. Keys: ``grad_share/<term>_at_<group>``,
        ``grad_cos/<term>_<term>_at_<group>``.
        """
        groups = {"encoder": [p for p in encoder_parameters if p.requires_grad]}
        groups["decoder"] = [p for p in decoder_parameters if p.requires_grad]
        parameters = groups["encoder"] + groups["decoder"]
        split = len(groups["encoder"])
        gradients: dict[str, dict[str, list[torch.Tensor | None]]] = {"encoder": {}, "decoder": {}}
        for name, term in terms.items():
            grads = torch.autograd.grad(self.weights[name] * term, parameters, retain_graph=True, allow_unused=True)
            for where, part in (("encoder", grads[:split]), ("decoder", grads[split:])):
                if any(g is not None for g in part):  # the term reaches this group
                    gradients[where][name.removesuffix("_loss")] = list(part)
        return {key: value for where, per_term in gradients.items() for key, value in _shares(per_term, where).items()}

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


def _shares(per_term: dict[str, list[torch.Tensor | None]], where: str) -> dict[str, torch.Tensor]:
    """``s_t = ⟨g_t, g⟩ / ‖g‖²`` of each term and ``cos(g_a, g_b)`` of each pair, in one parameter group.

    From the Gram matrix of the terms' gradients, summed parameter by parameter (no flattened copies):
    ``⟨g_t, g⟩`` is row t's sum, ``‖g‖²`` the matrix's.
    """
    names = list(per_term)
    if not names:
        return {}
    count = len(names)
    entries: dict[tuple[int, int], torch.Tensor] = {}  # upper triangle, on the gradients' device
    for grads in zip(*(per_term[name] for name in names), strict=True):  # one parameter at a time
        for i, j in itertools.combinations_with_replacement(range(count), 2):
            if grads[i] is not None and grads[j] is not None:
                dot = torch.sum(grads[i].double() * grads[j].double())
                entries[i, j] = entries[i, j] + dot if (i, j) in entries else dot
    gram = torch.zeros(count, count, dtype=torch.float64)
    for (i, j), value in entries.items():
        gram[i, j] = gram[j, i] = value.cpu()
    squared = gram.sum().clamp_min(1e-30)
    values = {f"grad_share/{name}_at_{where}": (gram[i].sum() / squared).float() for i, name in enumerate(names)}
    for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
        norms = (gram[i, i] * gram[j, j]).sqrt().clamp_min(1e-30)
        values[f"grad_cos/{a}_{b}_at_{where}"] = (gram[i, j] / norms).float()
    return values
