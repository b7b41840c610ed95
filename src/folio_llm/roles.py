"""A contributor's role only where the description says it.

The model writes "Author" for the first name of almost every answer, also where the record has
no role and the description names none: the most frequent made-up value (benchmarks/RESULTS.md).
So an answer keeps a contributor's ``contributorTypeText`` only where the description holds the
role's word ("Author: …", "… (editor)"), the phrase a title page puts before such a name
("edited by", and "by" for an author), or its abbreviation in a citation ("(Ed.)"); otherwise
the role goes, and the record says what the description said: a name.
"""

from __future__ import annotations

import json
import re

from folio_llm.styles import ROLE_PHRASES

# how citations abbreviate the roles they print (CSL styles: APA "(Ed.)", Chicago "ed.", "trans.")
ROLE_ABBREVIATIONS = {"editor": ("ed.", "eds."), "translator": ("trans.", "tr."), "compiler": ("comp.", "comps."),
                      "illustrator": ("ill.", "illus.")}


# "Published by X": a publisher's "by" says nothing of an author
NOT_AN_AUTHORS_BY = "".join(f"(?<!{verb} )" for verb in ("published", "printed", "distributed", "issued",
                                                         "produced", "manufactured"))


def _said(words: str, text: str) -> bool:
    before = NOT_AN_AUTHORS_BY if words == "by" else ""
    return re.search(before + r"(?<!\w)" + re.escape(words) + r"(?!\w)", text) is not None


def role_said(role: str, description: str) -> bool:
    """Does ``description`` (lower case, the answer's names taken out) say ``role``?"""
    role = role.strip().rstrip(".").lower()
    if not role:
        return True
    words = [role, *ROLE_ABBREVIATIONS.get(role, ())]
    if role in ROLE_PHRASES:
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
