"""What a run tells while it trains and when it ends: the loss window, the dvclive and console
log, the progress bar and metrics/train.json (the same keys whichever backend trained)."""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from folio_llm.training.data import EncodedSplit
from folio_llm.training.steps import Progress


class LossWindow:
    """Mean loss and tokens/s since the last log line, and the time left at the rate so far."""

    def __init__(self, start_step: int):
        self.started, self.start_step = time.perf_counter(), start_step
        self.last_loss: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.opened, self.loss, self.micro, self.tokens = time.perf_counter(), 0.0, 0, 0

    def add(self, loss_sum: float, micro_batches: int, tokens: int) -> None:
        self.loss += loss_sum
        self.micro += micro_batches
        self.tokens += tokens

    def close(self, step: int, total_steps: int) -> tuple[dict, float | None]:
        """(loss and tokens_per_s of the window, seconds left) and a new window."""
        elapsed = time.perf_counter() - self.opened
        self.last_loss = self.loss / max(1, self.micro)
        values = {"loss": self.last_loss, "tokens_per_s": self.tokens / elapsed if elapsed > 0 else None}
        done = step - self.start_step
        left = (time.perf_counter() - self.started) / done * (total_steps - step) if done > 0 else None
        self._reset()
        return values, left


class Logger:
    """Loss, learning rate and tokens/s to dvclive (for `dvc plots show`) and to the console."""

    def __init__(self, live_dir: Path | None, enabled: bool, resume: bool):
        self.live = None
        self.enabled = enabled
        if enabled and live_dir is not None:
            from dvclive import Live

            self.live = Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=False)

    def log(self, step: int, values: dict, total_steps: int = 0, seconds_left: float | None = None) -> None:
        if not self.enabled:
            return
        if self.live is not None:
            self.live.step = step
            for name, value in values.items():
                if value is not None:
                    self.live.log_metric(f"train/{name}", value)
            self.live.next_step()
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if v is not None)
        left = f" (about {seconds_left / 60:.1f} min left)" if seconds_left is not None else ""
        tqdm.write(f"step {step}{f'/{total_steps}' if total_steps else ''}: {shown}{left}")

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


def step_bar(total_steps: int, done: int, enabled: bool):
    return tqdm(total=total_steps, initial=done, desc="train", unit="step", disable=None if enabled else True,
                dynamic_ncols=True)


def run_metrics(progress: Progress, steps_per_epoch: int, train_rows: EncodedSplit, valid_rows: EncodedSplit,
                train_loss, valid_loss, tokens_at_start: int, seconds: float, resumed_from: int,
                precision: str, device: str, processes: int, compiled: bool = False) -> dict:
    """metrics/train.json: the same keys whichever backend trained."""
    return {
        "steps": progress.step,
        "epochs": round(progress.step / steps_per_epoch, 3),
        "train_rows": len(train_rows.rows),
        "train_rows_too_long": train_rows.too_long,
        "valid_rows": len(valid_rows.rows),
        "train_loss": train_loss,
        "valid_loss": valid_loss,
        "tokens": progress.tokens,
        "tokens_per_s": round((progress.tokens - tokens_at_start) / seconds, 1) if seconds else None,
        "seconds": round(seconds, 1),
        "resumed_from_step": resumed_from,
        "precision": precision,
        "device": device,
        "processes": processes,
        "compiled": compiled,
    }
