"""The click commands, one module per pipeline stage (its script in ``scripts/`` imports only
that module); ``folio_llm.cli`` gathers them into `folio-llm`."""
