"""folio_instance: field-level scores of FOLIO Instance records a model wrote as JSON.

A thin Hugging Face ``evaluate`` wrapper: the logic is ``folio_llm.evaluation.scoring.score``
(the folio-llm package must be installed). Load it offline by path:

    >>> import evaluate
    >>> metric = evaluate.load("metrics/folio_instance")
    >>> metric.compute(predictions=[answer_json], references=[target_json],
    ...                transcribed=[["title"]], inferred=[["languages"]])
"""

import datasets
import evaluate

from folio_llm.evaluation import scoring

_CITATION = """\
@misc{fingreylit,
  title = {FinGreyLit: metadata extraction evaluation (eval/eval.py)},
  author = {{National Library of Finland}},
  howpublished = {\\url{https://github.com/NatLibFi/FinGreyLit}},
}
"""

_DESCRIPTION = """\
Scores model outputs (JSON text) against reference FOLIO Instance records (JSON text, labels
instead of UUIDs) field by field: parse rates (strict and lenient), target-schema validity,
optional FOLIO Instance schema validity, per-field scores and outcome counts, and the
FinGreyLit-style macro average (mean over fields of the mean per-record score) with seeded
bootstrap 95% intervals, overall, over present fields, and split by transcribed / inferred.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of model outputs (str), one JSON object each (code fences tolerated).
    references: list of reference records (str), strict JSON.
    transcribed: optional list (per row) of target fields the prompt told.
    inferred: optional list (per row) of target fields the model had to infer.
    schema, folio_schema, reference_data, n_boot, seed, unparseable: passed to
        folio_llm.evaluation.scoring.score.
Returns:
    the report dict of folio_llm.evaluation.scoring.score: n, parse_rate_strict, parse_rate,
    schema_valid_rate, folio_schema_valid_rate, macro (+ _ci), macro_present,
    macro_transcribed, macro_inferred, fields.<field>.{score, exact, partial, missing,
    hallucinated, wrong, both_empty, unparsed, n_present}, ...
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FolioInstance(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("string"),
                "references": datasets.Value("string"),
            }),
            reference_urls=["https://github.com/NatLibFi/FinGreyLit/blob/main/eval/eval.py"],
        )

    def _compute(self, predictions, references, transcribed=None, inferred=None, **options):
        return scoring.score(predictions, references, transcribed=transcribed, inferred=inferred, **options)
