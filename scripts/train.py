"""DVC stage `train`: LoRA fine-tuning (params: seed, train) -> models/adapter, metrics/train.json."""
from folio_llm.commands.train import train

if __name__ == "__main__":
    train()
