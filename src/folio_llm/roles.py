"""A contributor's role only where the description says it.

The model writes "Author" for the first name of almost every answer, also where the record has
no role and the description names none: the most frequent made-up value (benchmarks/RESULTS.md).
So an answer keeps a contributor's ``contributorTypeText`` only where the description holds the
role's word ("Author: …", "… (editor)"), the phrase a title page puts before such a name
("edited by"), or its abbreviation in a citation ("(Ed.)"); otherwise the role goes, and the
record says what the description said: a name. A bare "by" says no role: descriptions put it
before authors and before names without a role alike (measured: counting it as "author" scores
the roles 0.55, not counting it 0.61; benchmarks/RESULTS.md).

The same concern on the training side: ``without_roles`` leaves untold roles out of a training
answer (off by default: it did not change what the model writes).
"""

from __future__ import annotations

import json
import re

# role words as a title page or a cataloger puts them before a name (the description styles
# write them: folio_llm.styles)
ROLE_PHRASES = {
    "author": "by", "editor": "edited by", "illustrator": "illustrated by", "translator": "translated by",
    "compiler": "compiled by", "composer": "music by", "photographer": "photographs by",
    "performer": "performed by", "arranger of music": "arranged by", "writer of added commentary": "commentary by",
}
# how citations abbreviate the roles they print (APA's "(Ed.)"); in brackets only: a bare "ed." is
# an edition's ("2nd ed."), a bare "ill." an extent's ("69 v. : ill.")
ROLE_ABBREVIATIONS = {"editor": ("(ed.)", "(eds.)"), "translator": ("(trans.)",), "compiler": ("(comp.)", "(comps.)")}


def _said(words: str, text: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(words) + r"(?!\w)", text) is not None


def role_said(role: str, description: str) -> bool:
    """Does ``description`` (lower case, the answer's names taken out) say ``role``?"""
    role = role.strip().rstrip(".").lower()
    if not role:
        return True
    words = [role, *ROLE_ABBREVIATIONS.get(role, ())]
    if ROLE_PHRASES.get(role, "by") != "by":  # "by" stands before authors and names without a role alike
        words.append(ROLE_PHRASES[role])
    return any(_said(word, description) for word in words)


def roles_from_words(answer: str, description: str) -> str:
    """``answer`` (a JSON record) without the roles ``description`` does not say; unchanged
    (byte for byte) where every role is said or the answer is no JSON object."""
    try:
        record = json.loads(answer)
    except ValueError:
        return answer
    contributors = record.get("contributors") if isinstance(record, dict) else None
    if not isinstance(contributors, list):
        return answer
    text = description.lower()
    for contributor in contributors:  # a name can hold a role's word ("ELA, author")
        if isinstance(contributor, dict) and isinstance(contributor.get("name"), str) and contributor["name"].strip():
            text = text.replace(contributor["name"].lower(), " ")
    changed = False
    for contributor in contributors:
        role = contributor.get("contributorTypeText") if isinstance(contributor, dict) else None
        if isinstance(role, str) and not role_said(role, text):
            del contributor["contributorTypeText"]
            changed = True
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) if changed else answer


def without_roles(contributors: list) -> list:
    """The contributors of a training answer whose description names them without role words:
    a role no word told is left out (``dataset.untold_targets`` without
    'contributors.contributorTypeText'; a citation's roles are read off the reference it prints)."""
    return [{k: v for k, v in c.items() if k != "contributorTypeText"} if isinstance(c, dict) else c
            for c in contributors]
