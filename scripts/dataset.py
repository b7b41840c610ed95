"""DVC stage `dataset`: prompt/target pairs, seeded split, every layout (params: seed, dataset)."""
from folio_llm.commands.dataset import build_dataset

if __name__ == "__main__":
    build_dataset()
