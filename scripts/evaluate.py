"""DVC stage `evaluate`: base (zero-shot) vs tuned on the test split, field by field (params: eval)."""
from folio_llm.commands.evaluate import evaluate_stage

if __name__ == "__main__":
    evaluate_stage()
