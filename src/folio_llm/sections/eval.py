"""Section ``eval``: generation and scoring (stage ``evaluate``; predict, serve and export decode with it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from folio_llm.typed_config import ParamsError, setting

# the told fields whose values the copy constraint holds to the description (decoding.copy_constraint)
COPY_FIELDS = ("title", "contributors.name", "publication.publisher", "publication.place",
               "publication.dateOfPublication", "subjects.value", "identifiers.value", "editions",
               "physicalDescriptions", "series.value", "classifications.classificationNumber")


@dataclass
class EvalParams:
    batch_size: int = setting("Prompts generated together (greedy, KV cache).", 16)
    max_new_tokens: int = setting("Longest answer in tokens; a base model that rambles stops here.", 768)
    base_max_new_tokens: int = setting(
        "Longest answer of the base model in the zero-shot baseline (0 = max_new_tokens). The "
        "untuned base writes prose, not the record's JSON, and would otherwise run to "
        "max_new_tokens on every row, for minutes of the default run and a score of 0.",
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
        "the description. contributors.name is held to the description's words as told or, for a "
        "name told in natural order ('Peter H. English'), inverted ('English, Peter H.'); a name "
        "starts with a capital, ends before a '; ', a line break, a subject's '--' or a '(role)' (not "
        "before a '(Qualifier)': 'Spier, R. (Raymond)'), "
        "and is written twice at most (a part of it counts: a model in a loop).",
        factory=lambda: list(COPY_FIELDS))
    tenant_labels: bool = setting(
        "Hold the type labels of an answer (identifierTypeText, contributorNameTypeText, "
        "classificationTypeText, instanceTypeText...) to the names in the tenant's reference data "
        "(source.reference_data; identifier types to denormalize.identifier_types) while decoding, so "
        "every label maps back to a UUID: a description unlike the training rows otherwise gets labels "
        "such as 'Subject' or 'Hardcover : alk. paper' that FOLIO refuses. Languages likewise are the "
        "tenant's codes (ISO 639-2: not 'it', 'ja' or 'Chinese'). A contributor's role stays free text "
        "(FOLIO keeps one it does not know). Needs constrained.", True)
    copy_within_parts: bool = setting(
        "With the copy constraint: no copied value reaches over a phrase the description styles open a "
        "part with ('Language: ', 'Subjects are ', '; place: '; folio_llm.templates.part_labels) where a "
        "line, a sentence, a list item or an ISBD area begins, so a name does not run on into "
        "'Subjects: Birdsongs' nor a subject list into 'Language: English', nor over an ISBD area's "
        "'— ' (a title does not run on into the publication area); where the description "
        "labels its subjects ('Subjects: A; B'), a subject is whole items of that list, no other "
        "field's value comes from it and the answer's subjects end with the list's last item; where "
        "labels open the names ('Names: A; B', 'Author: A'), the answer lists no more names than they "
        "hold.", True)
    open_below: dict[str, float] = setting(
        "With the copy constraint: where the answer may begin one of these record fields next and the "
        "model leaves it out less surely than this, the field is begun (its values still copied from "
        "the description), and its confidence is the model's own for beginning it, so it is flagged "
        "for review. The model left a citation's authors out of many answers, and unsurely "
        "(benchmarks/RESULTS.md). {} = never.",
        factory=lambda: {"contributors": 0.7})
    roles_need_words: bool = setting(
        "Keep a contributor's role (contributorTypeText) only where the description says it: the "
        "role's word ('Author: ...', '(editor)'), its phrase before a name ('edited by'; a bare 'by' "
        "stands before authors and names without a role alike) or a citation's '(Ed.)'; otherwise the "
        "answer gives the name alone (evaluate, predict, the page; folio_llm.roles). The model writes "
        "'Author' for most first names whatever the description says.", True)
    review_below: float = setting(
        "Flag a field for review when the model was less sure of it than this: the lowest "
        "probability, under the decoding constraints, of the tokens that decided it (its key, "
        "value and end, or the choice that left it out). The page highlights flagged fields, "
        "predict lists them, evaluate scores them (metrics/eval_review.csv: recall of the wrong "
        "told fields and false alarms on the right ones at every threshold). The default is the highest "
        "threshold that keeps false alarms at or under 15% for the default model on the valid split "
        "(benchmarks/RESULTS.md). 0 flags nothing.",
        0.8)
    review_unused: bool = setting(
        "List beside the record the text of the description no value of the record holds (the "
        "words the description styles write around values, such as 'Title:' or 'edited by', do not "
        "count): a told part the answer left out shows there, however sure the model was (the last "
        "name of a list, a series in a citation). The page and predict show it with the flagged "
        "fields; evaluate counts a wrong told field as flagged when what it misses is in that text "
        "(folio_llm.unused).", True)
    draft_tokens: int = setting(
        "Draft-then-verify decoding (evaluate, predict, the page, the API): per row and step, up to "
        "this many tokens are drafted from the row's prompt and the answers written so far (prompt "
        "lookup: the JSON keys every answer repeats, the values copied from the description), checked "
        "in one forward pass and kept only where greedy decoding under the constraints picks them, so "
        "the answers are those of plain decoding token for token wherever the arithmetic of a pass over "
        "several tokens equals that over one (transformers in float32; in bfloat16, and with llama.cpp's "
        "kernels, they part at near-ties as between two batch sizes). "
        "0 = a token a step (transformers' own generate).", 4)
    limit: int = setting("Evaluate only the first N test rows (0 = all).", 0)
    dtype: Literal["auto", "float32", "bfloat16"] = setting(
        "Weights dtype for generation: 'auto' = bfloat16 where the device computes it natively "
        "(CUDA, CPUs with AVX-512 BF16: faster than float32 there at the same scores), else float32.",
        "auto",
    )

    def check(self) -> None:
        if not all(isinstance(below, (int, float)) and 0 <= below <= 1 for below in self.open_below.values()):
            raise ParamsError(f"params: eval.open_below must map fields to numbers between 0 and 1, "
                              f"not {self.open_below}")
        if not 0 <= self.review_below <= 1:
            raise ParamsError(f"params: eval.review_below must be between 0 and 1, not {self.review_below}")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.limit < 0 or not 0 <= self.draft_tokens <= 15:
            raise ParamsError("params: eval.batch_size and eval.max_new_tokens must be >= 1, eval.limit >= 0, "
                              "eval.draft_tokens 0 to 15")
