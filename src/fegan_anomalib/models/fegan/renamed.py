"""Constructor arguments renamed, still accepted with a ``FutureWarning`` for two minor versions.

``use_mse``/``mse_*`` read as "mean squared error" in a file full of losses, though they steer any
of five augmentations (anomalib calls this part the ``augmenter``); ``score_lambda`` sat beside the
loss weights ``lambda_*`` though it weighs the F map of the score; ``d_collapse_loss`` is a
threshold (all renamed in 0.2, removed in 0.4); ``gradient_norm_every`` has logged the terms' shares
of the update (``grad_share/*``, ``grad_cos/*``), not gradient norms, since 0.2 (renamed in 0.3, removed in
0.5). Saved configs (``--config`` of an old run) and checkpoints (their hyper-parameters) keep loading: the
old name is mapped onto the new one and the checkpoint written next carries the new.
"""

from __future__ import annotations

import warnings
from collections.abc import MutableMapping
from typing import Any

RENAMED = {
    "use_mse": "use_augmenter",
    "augmentation": "augmenter",
    "augmentation_args": "augmenter_args",
    "mse_area_ratio": "augmenter_area_ratio",
    "mse_max_patch_ratio": "augmenter_max_patch_ratio",
    "mse_seed": "augmenter_seed",
    "score_lambda": "feature_map_weight",
    "d_collapse_loss": "d_collapse_threshold",
    "gradient_norm_every": "gradient_share_every",
}
# the release that drops each old name (two minor versions after its rename)
REMOVED_IN = {old: "0.4" for old in RENAMED} | {"gradient_norm_every": "0.5"}


def rename_in_place(hparams: MutableMapping[str, Any], checkpoint: bool = False) -> None:
    """Move every deprecated argument that was given (not ``None``) onto its new name; drop the old keys.

    Run on the module's ``hparams`` right after ``save_hyperparameters``, so the checkpoint written
    next holds only the new names; with ``checkpoint``, on a saved checkpoint's hyper-parameters (the warning then
    says the checkpoint is read, not that the user should type the new name).
    """
    for old, new in RENAMED.items():
        value = hparams.pop(old, None)
        if value is None:
            continue
        if checkpoint:
            advice = f"this checkpoint's `{old}` is read as `{new}` (a checkpoint saved again records the new name)"
        else:
            advice = f"use `{new}` (e.g. `--model.{new}`)"
        warnings.warn(
            f"FEGAN's `{old}` is renamed `{new}` and the old name will be removed in fegan-anomalib {REMOVED_IN[old]}; "
            f"{advice}.",
            FutureWarning,
            stacklevel=3,
        )
        hparams[new] = value
