"""DVC stage `export`: merged model, GGUF files for llama.cpp / Ollama / GPT4All, parity check (params: export)."""
from folio_llm.commands.export import export

if __name__ == "__main__":
    export()
