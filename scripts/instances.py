"""DVC stage `instances`: source records -> a seeded sample of FOLIO Instances (params: seed, source)."""
from folio_llm.commands.instances import instances

if __name__ == "__main__":
    instances()
