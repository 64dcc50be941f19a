"""nnU-Net v2's own train and predict commands with a trainer that stops at a time budget.

Run by ``benchmarks/peer_nnunet.py`` (needs the ``bench`` extra)::

    python benchmarks/nnunet_budget.py train   <nnUNetv2_train arguments> -tr nnUNetTrainerBudget
    python benchmarks/nnunet_budget.py predict <nnUNetv2_predict arguments> -tr nnUNetTrainerBudget

The arguments go unchanged to nnU-Net's ``nnUNetv2_train`` / ``nnUNetv2_predict`` entry
points, so nnU-Net runs exactly as from its own commands, with one difference: the trainer
``nnUNetTrainerBudget`` below. The budget comes from the environment (nnU-Net's command
line has no place for it): ``CLOTSEG_NNUNET_BUDGET_S`` seconds from the start of training.
``CLOTSEG_NNUNET_ITERATIONS`` shortens the epochs for smoke tests.

nnU-Net finds trainers by class name, by importing every module of its trainer package
(or of the folders in ``nnUNet_extTrainer``). Some of those modules need timm and
torchvision, which nnU-Net does not need otherwise and which cannot be installed next to
a CPU-only torch wheel without replacing it; so this wrapper answers the look-up for its
own trainer name and hands every other name to nnU-Net's search.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities import find_objects

BUDGET_ENV = "CLOTSEG_NNUNET_BUDGET_S"
#: Smoke tests only (``peer_nnunet.py --quick``): fewer iterations per epoch than nnU-Net's
#: 250 (validation: a fifth of it), so that a tiny budget ends within minutes on a CPU.
ITERATIONS_ENV = "CLOTSEG_NNUNET_ITERATIONS"


class _BudgetSpent(Exception):
    """Raised at an epoch end once the wall-clock budget is used up."""


class nnUNetTrainerBudget(nnUNetTrainer):  # nnU-Net's naming convention for trainers
    """nnU-Net's default trainer, stopped at the first epoch end past the budget, or at the
    first iteration past it when an epoch is longer than the budget allows.

    nnU-Net's 2d plan on a CPU can make one epoch (250 iterations of a large batch) longer
    than the whole budget; stopping only at epoch ends would then give it several times
    clotseg's training time. Stopped mid-epoch, the weights of the last iteration are saved
    as its final checkpoint (as at any stop) and ``budget.json`` counts the iterations.

    Two more differences, both outside the budgeted training: ``budget.json`` (epochs done,
    training seconds, batch and patch size) is written next to the checkpoints, and
    nnU-Net's own validation on the fold's held-out cases is skipped (the benchmark scores
    on its own test cohorts; on a small CPU that validation costs minutes).
    """

    def initialize(self) -> None:  # not __init__: nnU-Net records its exact signature
        super().initialize()
        if os.environ.get(ITERATIONS_ENV):
            self.num_iterations_per_epoch = int(os.environ[ITERATIONS_ENV])
            self.num_val_iterations_per_epoch = max(1, self.num_iterations_per_epoch // 5)

    def run_training(self) -> None:
        self.budget_s = float(os.environ.get(BUDGET_ENV, "inf"))
        self.t_start = time.perf_counter()
        stopped = "epochs"
        try:
            super().run_training()
        except _BudgetSpent:
            stopped = "budget"
            self.on_train_end()  # final checkpoint; data-augmentation workers shut down
        seconds = time.perf_counter() - self.t_start
        if self.local_rank == 0:
            Path(self.output_folder, "budget.json").write_text(json.dumps({
                "budget_s": self.budget_s, "epochs": self.current_epoch,
                "train_seconds": seconds, "stopped": stopped,
                "iterations_per_epoch": self.num_iterations_per_epoch,
                "iterations_done": getattr(self, "iterations_done", 0),
                "batch_size": self.batch_size,
                "patch_size": [int(v) for v in self.configuration_manager.patch_size],
            }, indent=2) + "\n")

    def train_step(self, batch: dict) -> dict:
        self._check_budget()
        out = super().train_step(batch)
        self.iterations_done = getattr(self, "iterations_done", 0) + 1
        return out

    def validation_step(self, batch: dict) -> dict:
        self._check_budget()
        return super().validation_step(batch)

    def _check_budget(self) -> None:
        """Stop mid-epoch once the budget is spent (after at least one iteration)."""
        if getattr(self, "iterations_done", 0) and (
                time.perf_counter() - self.t_start >= self.budget_s):
            self.print_to_log_file(f"budget spent after {self.iterations_done} iterations")
            raise _BudgetSpent

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        if time.perf_counter() - self.t_start >= self.budget_s:
            raise _BudgetSpent

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("fold validation skipped (the benchmark scores its own "
                               "test cohorts)")


def find_trainer(name: str):
    """This module's trainer by name; any other name through nnU-Net's own search."""
    if name == nnUNetTrainerBudget.__name__:
        return nnUNetTrainerBudget
    return _nnunet_find(name)


_nnunet_find = find_objects.recursive_find_trainer_class_by_name


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("train", "predict"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    action = sys.argv.pop(1)
    if action == "train":
        from nnunetv2.run import run_training as module

        entry = module.run_training_entry
    else:
        from nnunetv2.inference import predict_from_raw_data as module

        entry = module.predict_entry_point
    module.recursive_find_trainer_class_by_name = find_trainer  # see the module docstring
    entry()
    return 0


if __name__ == "__main__":
    sys.exit(main())
