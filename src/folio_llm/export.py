"""Use the model elsewhere: the adapter merged into the base, GGUF files for llama.cpp / Ollama /
GPT4All (llama.cpp's own converter and quantizer), an Ollama Modelfile, and a parity check of
the GGUF files against the merged model on real test prompts."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

from folio_llm.splits import load_test_rows
from folio_llm.jsonl import write_json

# types llama.cpp's converter writes straight from the safetensors
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")


def gguf_path(out_dir: str | Path, name: str, kind: str) -> Path:
    return Path(out_dir) / f"{name}-{kind}.gguf"


def gpt4all_path(out_dir: str | Path, name: str, kind: str) -> Path:
    return Path(out_dir) / f"{name}-{kind}-gpt4all.gguf"


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def merge(base_dir: str | Path, adapter_dir: str | Path | None, out_dir: str | Path) -> Path:
    """The base with the LoRA adapter merged in, as a Hugging Face folder (safetensors,
    tokenizer, chat template), in float32 so nothing is rounded twice before GGUF."""
    from folio_llm.decoding.generate import load_for_inference

    model, tokenizer = load_for_inference(base_dir, adapter_dir, "float32")
    tokenizer.padding_side = "right"  # load_for_inference sets left for batched generation
    for config in (model.config, model.generation_config):
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.eos_token_id
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    _replace_dir(tmp, out)
    return out


def convert(model_dir: str | Path, out: str | Path, kind: str, name: str) -> Path:
    """One GGUF file from a Hugging Face folder with llama.cpp's converter (``convert_hf_to_gguf``:
    tensor layouts, tokenizer, chat template and special tokens as llama.cpp expects them)."""
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    if kind not in CONVERTER_TYPES:
        raise ValueError(f"the converter writes {', '.join(CONVERTER_TYPES)}, not '{kind}'")
    logging.getLogger("hf-to-gguf").setLevel(logging.ERROR)  # it logs every tensor
    model_dir, out = Path(model_dir), Path(out)
    architecture = get_model_architecture(ModelBase.load_hparams(model_dir, False), ModelType.TEXT)
    try:
        model_class = get_model_class(architecture)
    except NotImplementedError:
        raise ValueError(f"{model_dir}: llama.cpp's converter does not support the architecture {architecture}") from None
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[kind]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with torch.inference_mode():
            model_class(model_dir, file_type, tmp, model_name=name).write()
    except (NotImplementedError, KeyError) as exc:  # e.g. a tokenizer the converter does not know
        tmp.unlink(missing_ok=True)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{model_dir}: llama.cpp's converter cannot convert it ({reason})") from None
    tmp.replace(out)
    return out


def write_ggufs(model_dir: str | Path, out_dir: str | Path, kinds: Sequence[str], name: str) -> dict[str, dict]:
    """``<name>-<kind>.gguf`` per kind; q4_k_m is quantized by llama.cpp from an f16 file
    (kept only when f16 is asked for too). Returns kind -> {file, bytes, seconds}."""
    from folio_llm.decoding.llamacpp import quantize

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict] = {}
    for kind in sorted(kinds, key=lambda k: k not in CONVERTER_TYPES):  # f16 before what it feeds
        path = gguf_path(out_dir, name, kind)
        started = time.perf_counter()
        if kind in CONVERTER_TYPES:
            convert(model_dir, path, kind, name)
        else:
            f16 = gguf_path(out_dir, name, "f16")
            source = f16 if f16.is_file() and "f16" in kinds else convert(
                model_dir, out_dir / f".{name}-f16.for-{kind}.gguf", "f16", name)
            try:
                tmp = path.with_name(f".{path.name}.tmp")
                quantize(source, tmp, kind)
                tmp.replace(path)
            finally:
                if source != f16:
                    source.unlink(missing_ok=True)
        written[kind] = {"file": str(path), "bytes": path.stat().st_size,
                         "seconds": round(time.perf_counter() - started, 1)}
    return {kind: written[kind] for kind in kinds}


def ollama_template(tokenizer) -> str:
    """The chat template as an Ollama TEMPLATE (Go template): the training template rendered
    around markers, the markers then swapped for .System, .Prompt and .Response."""
    from folio_llm.models import prompt_text

    system, user, answer = "\ue000SYSTEM\ue000", "\ue000PROMPT\ue000", "\ue000RESPONSE\ue000"
    head = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    prompt = prompt_text(tokenizer, head)
    full = tokenizer.apply_chat_template(head + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(prompt) or answer not in full[len(prompt):]:
        raise ValueError("the chat template renders the prompt differently inside the whole conversation")
    text = full.replace(system, "{{ .System }}").replace(user, "{{ .Prompt }}")
    return text.replace(answer, "{{ .Response }}")


def modelfile(name: str, gguf_name: str, tokenizer, system_prompt: str, max_new_tokens: int) -> str:
    """An Ollama Modelfile for ``gguf_name`` (beside it): the training chat template and
    system prompt, greedy decoding, and the end-of-turn token as the stop token."""
    template = ollama_template(tokenizer)
    if '"""' in system_prompt + template:
        raise ValueError('the system prompt or chat template holds """, which a Modelfile cannot quote')
    return (f"# ollama create {name} -f Modelfile; then: ollama run {name} \"For ...\"\n"
            f"FROM ./{gguf_name}\n"
            f'TEMPLATE """{template}"""\n'
            f'SYSTEM """{system_prompt}"""\n'
            f'PARAMETER stop "{tokenizer.eos_token}"\n'
            "PARAMETER temperature 0\n"
            "PARAMETER repeat_penalty 1\n"
            f"PARAMETER num_predict {max_new_tokens}\n"
            "PARAMETER num_ctx 4096\n")


# Logits are compared on the prompt's last position and this many answer positions after it
# (every position of a 49k vocabulary in float32 would take gigabytes for 20 long answers).
COMPARED_ANSWER_TOKENS = 64
# a position is decisive where the reference's best token leads the second by this many logits:
# there the other engine must choose the same token; below it, a change of arithmetic may flip
DECISIVE_MARGIN = 0.5


def teacher_forced(model, tokenizer, conversations, outputs) -> tuple[list[list[int]], list[int], list]:
    """Each prompt followed by the start of the reference answer, as token ids; the number of
    prompt tokens; the reference's float32 logits from the prompt's last position on."""
    import torch

    from folio_llm.models import prompt_text

    sequences, prompt_lengths, logits = [], [], []
    for messages, output in zip(conversations, outputs):
        prompt = tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]
        answer = tokenizer(output, add_special_tokens=False)["input_ids"][:COMPARED_ANSWER_TOKENS]
        ids = prompt + answer
        with torch.inference_mode():
            rows = model(torch.tensor([ids], device=model.device)).logits[0, len(prompt) - 1:]
        sequences.append(ids)
        prompt_lengths.append(len(prompt))
        logits.append(rows.float().cpu().numpy())
    return sequences, prompt_lengths, logits


def logit_agreement(reference: list, other: list, margin: float = DECISIVE_MARGIN) -> dict:
    """How far two engines' logits on the same tokens are apart, and whether they pick the same
    next token where the reference is decisive (its top two ``margin`` or more apart)."""
    import numpy as np

    positions = decisive = decisive_agree = agree = 0
    worst = 0.0
    for a, b in zip(reference, other):
        worst = max(worst, float(np.abs(a - b).max()))
        top2 = np.partition(a, -2, axis=1)[:, -2:]
        wide = np.abs(top2[:, 1] - top2[:, 0]) >= margin
        same = a.argmax(axis=1) == b.argmax(axis=1)
        positions += len(a)
        agree += int(same.sum())
        decisive += int(wide.sum())
        decisive_agree += int((same & wide).sum())
    return {"positions": positions, "max_abs_diff": round(worst, 4), "margin": margin, "decisive": decisive,
            "decisive_agree": decisive_agree, "top1_agree": agree}


def llamacpp_answers(path: str | Path, conversations: list[list[dict]], max_new_tokens: int):
    """(greedy answers of the GGUF file through llama.cpp, the file's tokenizer)."""
    from folio_llm.decoding.llamacpp import generate, load_gguf

    llm, gguf_tokenizer = load_gguf(path)
    try:
        return generate(llm, gguf_tokenizer, conversations, max_new_tokens), gguf_tokenizer
    finally:
        llm.close()


def llamacpp_logits(path: str | Path, gguf_tokenizer, conversations: list[list[dict]], sequences: list[list[int]],
                    prompt_lengths: list[int], reference_logits: list) -> dict:
    """The file's logits on transformers' tokens against transformers' own (``logit_agreement``),
    and how many prompts the file tokenizes to the same ids."""
    from folio_llm.decoding.llamacpp import token_logits
    from folio_llm.models import prompt_text

    prompts = [gguf_tokenizer(prompt_text(gguf_tokenizer, c), add_special_tokens=False)["input_ids"]
               for c in conversations]
    logits = [scores[n - 1:] for scores, n in zip(token_logits(path, sequences), prompt_lengths)]
    return {"prompt_tokens_identical": sum(p == s[:n] for p, s, n in zip(prompts, sequences, prompt_lengths)),
            **logit_agreement(reference_logits, logits)}


def parity(model_dir: str | Path, ggufs: dict[str, str | Path], rows: list[dict], *, batch_size: int,
           max_new_tokens: int, dtype: str = "float32", gpt4all: dict[str, str | Path] | None = None,
           meta: list[dict] | None = None) -> dict:
    """The merged model (transformers) against each GGUF file (llama.cpp; the files in
    ``gpt4all`` through GPT4All's own engine) on the same test prompts.

    What holds on every machine: the same prompt token ids, and logits on the same tokens (each
    prompt with the start of transformers' answer) within rounding of the file's type, with the
    same next token wherever the reference is decisive (``logits``). Reported, not a property
    any machine guarantees: the share of identical free-running greedy answers (a near-tie
    flipped by other kernels changes the rest of an answer) and each one's macro field score,
    scored as the evaluate stage scores (against the whole records of ``meta``, the test
    split's meta rows). The reference is float32, the weights as they are: bf16 generation
    flips near-ties itself."""
    from folio_llm.decoding.generate import generate as generate_hf
    from folio_llm.decoding.generate import inference_dtype, load_for_inference
    from folio_llm.evaluation.run import score_answers
    from folio_llm.gguf_compat import gpt4all_generate, gpt4all_version, token_ids
    from folio_llm.models import prompt_text

    conversations = [row["messages"][:-1] for row in rows]

    def summary(outputs: list[str], seconds: float) -> dict:
        report = score_answers(outputs, rows, meta, seconds=seconds, output_tokens=None)
        return {"macro": round(report["macro"], 4), "parse_rate": report["parse_rate"],
                "seconds": round(seconds, 1)}

    model, tokenizer = load_for_inference(model_dir, None, dtype)
    started = time.perf_counter()
    reference_outputs = generate_hf(model, tokenizer, conversations, batch_size, max_new_tokens)
    result: dict = {"rows": len(rows),
                    "transformers": {"dtype": inference_dtype(dtype),
                                     **summary(reference_outputs, time.perf_counter() - started)}}
    sequences, prompt_lengths, reference_logits = teacher_forced(model, tokenizer, conversations, reference_outputs)
    del model

    def compared(outputs: list[str], seconds: float) -> dict:
        entry = summary(outputs, seconds)
        entry["exact_match"] = round(sum(a == b for a, b in zip(outputs, reference_outputs)) / len(rows), 4)
        entry["macro_diff"] = round(entry["macro"] - result["transformers"]["macro"], 4)
        return entry

    for kind, path in ggufs.items():
        started = time.perf_counter()
        outputs, gguf_tokenizer = llamacpp_answers(path, conversations, max_new_tokens)
        result[kind] = compared(outputs, time.perf_counter() - started)
        result[kind]["logits"] = llamacpp_logits(path, gguf_tokenizer, conversations, sequences, prompt_lengths,
                                                 reference_logits)
    for kind, path in (gpt4all or {}).items():
        started = time.perf_counter()
        outputs, fed = gpt4all_generate(path, tokenizer, conversations, max_new_tokens)
        entry = compared(outputs, time.perf_counter() - started)
        expected = token_ids(path, [prompt_text(tokenizer, c) for c in conversations])
        entry["prompt_tokens_identical"] = sum(a == b for a, b in zip(fed, expected))
        result[kind] = {"engine": f"gpt4all {gpt4all_version()}", **entry}
    return result


def export(base_dir: str | Path, adapter_dir: str | Path | None, merged_dir: str | Path, gguf_dir: str | Path,
           metrics_path: str | Path, data_path: str | Path, params) -> dict:
    """The stage: merge, GGUF files, GPT4All-compatible copies, Modelfile, parity check;
    metrics to ``metrics_path``."""
    from folio_llm.gguf_compat import gpt4all_version, make_compatible
    from folio_llm.models import load_tokenizer

    settings = params.export
    test_rows, meta = load_test_rows(data_path) if settings.parity_rows or settings.gpt4all else ([], None)
    rows = test_rows[:settings.parity_rows]
    started = time.perf_counter()
    merged = merge(base_dir, adapter_dir, merged_dir)
    metrics: dict = {"merged": {"dir": str(merged), "seconds": round(time.perf_counter() - started, 1),
                                "bytes": sum(p.stat().st_size for p in merged.iterdir())}}
    gguf_dir = Path(gguf_dir)
    if gguf_dir.exists():
        shutil.rmtree(gguf_dir)
    metrics["gguf"] = write_ggufs(merged, gguf_dir, settings.types, settings.name)
    first = Path(metrics["gguf"][settings.types[0]]["file"]).name
    (gguf_dir / "Modelfile").write_text(
        modelfile(settings.name, first, load_tokenizer(str(merged)), params.dataset.system_prompts[0],
                  params.eval.max_new_tokens), encoding="utf-8")
    compatible = {}
    if settings.gpt4all:
        conversations = [row["messages"] for row in test_rows]
        tokenizer = load_tokenizer(str(merged))
        metrics["gpt4all"] = {}
        for kind in settings.gpt4all:
            started = time.perf_counter()
            entry = make_compatible(metrics["gguf"][kind]["file"], gpt4all_path(gguf_dir, settings.name, kind),
                                    tokenizer, params.dataset.system_prompts[0], conversations)
            metrics["gpt4all"][kind] = {**entry, "seconds": round(time.perf_counter() - started, 1)}
            if entry["file"]:
                compatible[f"{kind}-gpt4all"] = entry["file"]
    if rows:
        run_gpt4all = compatible if gpt4all_version() else {}
        metrics["parity"] = parity(merged, {k: v["file"] for k, v in metrics["gguf"].items()}, rows,
                                   batch_size=params.eval.batch_size, max_new_tokens=params.eval.max_new_tokens,
                                   gpt4all=run_gpt4all, meta=meta[:len(rows)] if meta else None)
        if compatible and not run_gpt4all:
            metrics["parity"]["gpt4all"] = "not checked: the gpt4all package is not installed"
    write_json(metrics_path, metrics)
    return metrics
