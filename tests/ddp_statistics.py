"""Test a FEGAN checkpoint with a new memory size on 1 or 2 CPU processes; save what each rank measured.

Run by ``tests/test_ddp.py`` as ``python tests/ddp_statistics.py OUT_DIR CHECKPOINT DATA_ROOT DEVICES``: Lightning's
``ddp`` strategy re-launches this script once per rank. The test start measures the statistics of the new
``memory_size`` on the datamodule's training images (``StatisticsSchedule``), each image on one rank.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from anomalib.data import MVTecAD
from lightning.pytorch import Trainer

from fegan_anomalib import Fegan
from fegan_anomalib.models.fegan.measuring import TrainingImages
from fegan_anomalib.models.fegan.scoring import statistics


def main() -> None:
    """Test once; each rank saves its statistics, its images' ids, its left-out distances and fixed images' scores."""
    out, checkpoint, root, devices = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    torch.set_num_threads(1)
    left_out: list[torch.Tensor] = []
    search = statistics.nearest_distance

    def recording(cells, memory, cell_images=None, memory_images=None, spacing=None):
        distances = search(cells, memory, cell_images, memory_images, spacing)
        if cell_images is not None:
            left_out.append(distances)
        return distances

    statistics.nearest_distance = recording
    model = Fegan.load_from_checkpoint(checkpoint, memory_size=4, visualizer=False)
    datamodule = MVTecAD(root=root, category="texture", train_batch_size=3, eval_batch_size=4, num_workers=0)
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        default_root_dir=out,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(model, datamodule=datamodule, verbose=False)
    images = TrainingImages(model)
    with torch.no_grad():
        scores = model.model.eval()(torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    torch.save(
        {
            "statistics": model.model.anomaly_map_generator.state_dict(),
            "ids": images.ids,
            "indices": torch.tensor(images.indices),
            "left_out": torch.cat(left_out),
            "scores": scores.pred_score,
            "maps": scores.anomaly_map,
        },
        out / f"devices{devices}_rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main()
