"""Checkpoints: ``step-NNNNNN`` folders stamped with the run's fingerprint, the progress beside
the backend's own state, saved every ``save_every`` steps and resumed by a re-run of the same run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from folio_llm.jsonl import write_json
from folio_llm.training.steps import Progress

PROGRESS_FILE = "progress.json"


class CheckpointFolder:
    """``step-NNNNNN`` folders, each stamped with the run's fingerprint, and a ``last`` pointer
    written atomically; only the newest is kept. What goes inside is the backend's business."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = folder, fingerprint

    def target(self, step: int) -> Path:
        return self.folder / f"step-{step:06d}"

    def commit(self, target: Path) -> None:
        """Stamp ``target`` (already written), point ``last`` at it, remove older ones."""
        (target / "fingerprint.txt").write_text(self.fingerprint)
        (self.folder / "last.tmp").write_text(target.name)
        (self.folder / "last.tmp").replace(self.folder / "last")
        for old in self.folder.glob("step-*"):
            if old.name != target.name:
                shutil.rmtree(old, ignore_errors=True)

    def latest(self, required_file: str | None = None) -> Path | None:
        """The newest checkpoint if it belongs to this run; None when there is none, or (after
        a one-line notice) when it is from other settings, data or backend: it is removed."""
        pointer = self.folder / "last"
        target = self.folder / pointer.read_text().strip() if pointer.is_file() else None
        if target is None or not target.is_dir():
            return None
        stamp = target / "fingerprint.txt"
        if (not stamp.is_file() or stamp.read_text().strip() != self.fingerprint
                or (required_file and not (target / required_file).is_file())):
            print(f"checkpoint {target} is from other settings or data: starting over", flush=True)
            self.remove()
            return None
        return target

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def save_checkpoint(backend, checkpoints: CheckpointFolder, progress: Progress) -> None:
    """The backend's state (every process), then the progress and the ``last`` pointer (main)."""
    target = checkpoints.target(progress.step)
    backend.save_state(target)
    backend.barrier()
    if backend.is_main:
        write_json(target / PROGRESS_FILE, progress.state_dict())
        checkpoints.commit(target)


def resume(backend, checkpoints: CheckpointFolder, progress: Progress) -> int:
    """Load the last checkpoint if it belongs to this run; returns the step resumed from."""
    target = checkpoints.latest(required_file=PROGRESS_FILE)
    backend.barrier()
    if target is None:
        return 0
    backend.load_state(target)
    progress.load_state_dict(json.loads((target / PROGRESS_FILE).read_text()))
    return progress.step
