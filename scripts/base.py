"""DVC stage `base`: params.model.base -> a Hugging Face folder in models/base."""
from folio_llm.commands.base import base

if __name__ == "__main__":
    base()
