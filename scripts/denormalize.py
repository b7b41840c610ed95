"""DVC stage `denormalize`: reference UUIDs -> labels, keep the fields in params.denormalize."""
from folio_llm.commands.denormalize import denormalize

if __name__ == "__main__":
    denormalize()
