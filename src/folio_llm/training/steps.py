"""Which rows make each optimizer step, and what a run has done so far: the step plan, the
progress a checkpoint remembers, and the fingerprint that ties a checkpoint to its run."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from folio_llm.sections.train import TrainParams
from folio_llm.training.data import bucketed_batches


@dataclass
class Progress:
    """What a checkpoint must remember besides weights, optimizer, scheduler and RNG."""

    step: int = 0
    tokens: int = 0
    fingerprint: str = ""

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def fingerprint(params: TrainParams, seed: int, data_dir: Path, base_dir: Path) -> str:
    """Identifies a run: a checkpoint from other settings or data is not resumed."""
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    digest.update(str(seed).encode())
    for path in (data_dir / "train.jsonl", base_dir / "config.json"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class StepPlan:
    """Which micro-batches make each optimizer step: length-bucketed batches, reshuffled per
    epoch with the seed, this process's share of them (``rank::world``), ``grad_accum`` a step."""

    def __init__(self, lengths: list[int], params: TrainParams, seed: int, world: int = 1, rank: int = 0):
        self.lengths, self.batch_size, self.grad_accum, self.seed = lengths, params.batch_size, params.grad_accum, seed
        self.world, self.rank = world, rank
        self.micro_per_epoch = len(bucketed_batches(lengths, params.batch_size, seed, 0)) // world
        if self.micro_per_epoch == 0:
            raise ValueError("fewer batches than processes: lower train.batch_size or use fewer processes")
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / params.grad_accum)
        self.total_steps = params.max_steps or max(1, math.ceil(params.epochs * self.steps_per_epoch))

    def planned_tokens(self, epoch_tokens: int, from_step: int = 0) -> int:
        """Tokens this process trains on from ``from_step`` to the last step, for an epoch of
        ``epoch_tokens`` (all processes)."""
        return int(epoch_tokens * (self.total_steps - from_step) / self.steps_per_epoch / self.world)

    def groups(self, from_step: int) -> Iterator[list[list[int]]]:
        """Row indices of each micro-batch of every step from ``from_step`` to the last."""
        step = from_step
        while step < self.total_steps:
            epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
            mine = bucketed_batches(self.lengths, self.batch_size, self.seed, epoch)[self.rank::self.world]
            mine = mine[:self.micro_per_epoch]
            for start in range(step_in_epoch * self.grad_accum, self.micro_per_epoch, self.grad_accum):
                yield mine[start:start + self.grad_accum]
                step += 1
                if step >= self.total_steps:
                    return
