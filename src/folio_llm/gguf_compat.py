"""A GGUF copy that older llama.cpp engines load: GPT4All (the `gpt4all` 2.8 bindings and the
desktop app bundle a llama.cpp from mid-2024) and other tools that lag llama.cpp.

Newer llama.cpp names some pre-tokenizers that an older one refuses ("unknown pre-tokenizer type:
'smollm'") although an older name has the same split rules. The copy differs from the original
only in metadata: ``tokenizer.ggml.pre`` set to that older name, and a plain ChatML chat template
(the constructs GPT4All 3.x's own template engine reads) whose default system prompt is the
training one. Export keeps it only if llama.cpp tokenizes every test conversation to the same
ids with both files, and the template renders every test conversation as training did.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

# Pre-tokenizer name -> an older name that llama.cpp splits with the same rules and the same
# space handling (src/llama-vocab.cpp: one regex group, same clean_spaces / ignore_merges /
# add_bos flags), chosen among the names the old engine below knows.
SAME_SPLIT = {
    "smollm": "command-r",  # STARCODER group, clean_spaces off (starcoder/refact have it on)
    "codeshell": "starcoder", "exaone": "starcoder", "minerva-7b": "starcoder",
    "falcon3": "llama-bpe", "falcon-h1": "llama-bpe", "pixtral": "llama-bpe", "midm-2.0": "llama-bpe",
    "lfm2": "llama-bpe",
    "gigachat": "gpt-2", "a.x-4.0": "gpt-2", "mellum": "gpt-2", "exaone4": "gpt-2",
    "deepseek-r1-qwen": "qwen2", "kormo": "qwen2",
    "glm4": "chatglm-bpe",
}
# The pre-tokenizer names the llama.cpp inside gpt4all 2.8.2 knows (the strings its
# libllamamodel-mainline library compares `tokenizer.ggml.pre` with).
OLD_ENGINE_PRE = frozenset({
    "default", "llama3", "llama-v3", "llama-bpe", "deepseek-llm", "deepseek-coder", "falcon", "mpt",
    "starcoder", "gpt-2", "phi-2", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "jina-v2-code",
    "refact", "command-r", "qwen2", "stablelm2", "olmo", "dbrx", "smaug-bpe", "poro-chat",
    "chatglm-bpe", "viking", "jais",
})
PRE_KEY = "tokenizer.ggml.pre"
TEMPLATE_KEY = "tokenizer.chat_template"


def compatible_pre(pre: str) -> str | None:
    """The pre-tokenizer name to write for old engines, or None when no known name splits alike."""
    if pre in OLD_ENGINE_PRE:
        return pre
    return SAME_SPLIT.get(pre)


def read_field(path: str | Path, key: str):
    from gguf import GGUFReader

    field = GGUFReader(path).get_field(key)
    return None if field is None else field.contents()


def chatml_template(system_prompt: str) -> str:
    """A plain ChatML loop; without a system message it writes ``system_prompt``'s."""
    def literal(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    default = literal(f"<|im_start|>system\n{system_prompt}<|im_end|>\n")
    return ("{% if messages[0]['role'] != 'system' %}{{ " + default + " }}{% endif %}"
            "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
            "+ '<|im_end|>' + '\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def template_renders_like(tokenizer, template: str, conversations: Sequence[Sequence[dict]]) -> bool:
    """Whether ``template`` renders each conversation (with and without its answer, and without
    its system message) exactly as the training chat template does with the system message."""
    from folio_llm.models import prompt_text

    def render(messages, chat_template=None, prompt=False):
        return tokenizer.apply_chat_template(list(messages), chat_template=chat_template, tokenize=False,
                                             add_generation_prompt=prompt)

    for messages in conversations:
        head = [m for m in messages if m["role"] != "assistant"]
        no_system = [m for m in head if m["role"] != "system"]
        if not (render(head, template, True) == render(no_system, template, True) == prompt_text(tokenizer, head)
                and render(messages, template) == render(messages)):
            return False
    return True


def write_copy(source: str | Path, out: str | Path, changes: dict[str, str]) -> Path:
    """``source`` with the string metadata in ``changes`` replaced (gguf's own copier; tensors unchanged)."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(source)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    writer = gguf.GGUFWriter(tmp, arch=reader.get_field(gguf.Keys.General.ARCHITECTURE).contents(),
                             endianess=reader.endianess)
    with contextlib.redirect_stdout(None):
        copy_with_new_metadata(reader, writer, {key: MetadataDetails(gguf.GGUFValueType.STRING, value)
                                                for key, value in changes.items()}, [])
    tmp.replace(out)
    return out


def token_ids(path: str | Path, texts: Sequence[str]) -> list[list[int]]:
    """llama.cpp's token ids of each text (special tokens parsed, no BOS added), vocabulary only."""
    from folio_llm.decoding.llamacpp import llama_cpp_module

    llm = llama_cpp_module().Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return [llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) for text in texts]
    finally:
        llm.close()


def token_identity(original: str | Path, copy: str | Path, texts: Sequence[str]) -> dict:
    """How many texts both files tokenize to the same ids, and the first that differs."""
    a, b = token_ids(original, texts), token_ids(copy, texts)
    differ = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    result = {"texts": len(texts), "tokens": sum(map(len, a)), "identical": len(texts) - len(differ)}
    if differ:
        result["first_difference"] = texts[differ[0]][:200]
    return result


def make_compatible(source: str | Path, out: str | Path, tokenizer, system_prompt: str,
                    conversations: Sequence[Sequence[dict]]) -> dict:
    """Write the compatible copy of ``source`` to ``out`` and check it; returns what was done.
    Nothing is written when no older pre-tokenizer name splits alike, or when the copy would
    tokenize a test conversation differently (``{"file": None, "reason": ...}``)."""
    pre = read_field(source, PRE_KEY)
    target = compatible_pre(pre) if pre else None
    result: dict = {"file": None, "pre_tokenizer": pre, "written_pre_tokenizer": target}
    if pre and target is None:
        result["reason"] = (f"no pre-tokenizer name older engines know splits like '{pre}': "
                            "no GPT4All file written (use a newer llama.cpp, Ollama or GPT4All)")
        return result
    changes = {PRE_KEY: target} if target and target != pre else {}
    template = chatml_template(system_prompt)
    result["chat_template"] = "kept"
    if template_renders_like(tokenizer, template, conversations):
        changes[TEMPLATE_KEY] = template
        result["chat_template"] = "plain ChatML with the training system prompt as default"
    write_copy(source, out, changes)
    texts = [tokenizer.apply_chat_template(list(c), tokenize=False) for c in conversations]
    result["token_identity"] = token_identity(source, out, texts)
    if result["token_identity"]["identical"] != len(texts):
        Path(out).unlink()
        result["reason"] = (f"'{target}' tokenizes {len(texts) - result['token_identity']['identical']} of "
                            f"{len(texts)} test conversations differently from '{pre}': no GPT4All file written")
        return result
    result["file"] = str(out)
    return result


def gpt4all_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("gpt4all")
    except Exception:
        return None


def gpt4all_generate(path: str | Path, tokenizer, conversations: Sequence[Sequence[dict]],
                     max_new_tokens: int) -> tuple[list[str], list[list[int]]]:
    """Greedy answers of GPT4All's own engine (the `gpt4all` bindings, CPU, offline) in a chat
    session whose template is the training one around each user message, and the prompt token
    ids the engine fed itself, to compare with llama.cpp's."""
    from gpt4all import GPT4All
    from gpt4all._pyllmodel import LLModel
    from tqdm import tqdm

    from folio_llm.decoding.llamacpp import captured_stderr, threads
    from folio_llm.models import prompt_text

    path = Path(path)
    marker = "\ue000PROMPT\ue000"
    fed: list[int] = []
    answering = [False]  # the engine feeds its own answer tokens back through the same callback
    original_callback = LLModel._prompt_callback
    LLModel._prompt_callback = staticmethod(lambda token: answering[0] or fed.append(token) or True)

    def on_answer(token: int, text: str) -> bool:
        answering[0] = True
        return True

    answers, prompts = [], []
    try:
        with captured_stderr() as log:  # it reports every GPU backend it cannot load
            try:
                model = GPT4All(path.name, model_path=str(path.parent), allow_download=False,
                                n_threads=threads(), device="cpu", verbose=False)
            except Exception as exc:
                model = None
                failure = str(exc)
        if model is None:
            lines = [line for line in log[0].splitlines() if "error" in line.lower()]
            raise ValueError(f"{path}: GPT4All cannot load it ({(lines or [failure])[-1].strip()})")
        try:
            for messages in tqdm(conversations, desc="gpt4all", unit="prompt", disable=None, leave=False):
                head = [m for m in messages if m["role"] != "assistant"]
                user = next(m["content"] for m in reversed(head) if m["role"] == "user")
                rendered = prompt_text(tokenizer, [m if m["role"] != "user" else {**m, "content": marker}
                                                   for m in head])
                template = rendered.replace("{", "{{").replace("}", "}}").replace(marker, "{0}")
                fed.clear()
                answering[0] = False
                with model.chat_session(system_prompt="", prompt_template=template):
                    answer = model.generate(user, max_tokens=max_new_tokens, temp=0.0, top_k=1,
                                            repeat_penalty=1.0, callback=on_answer)
                answers.append(answer.strip())
                prompts.append(list(fed))
        finally:
            model.close()
    finally:
        LLModel._prompt_callback = original_callback
    return answers, prompts
