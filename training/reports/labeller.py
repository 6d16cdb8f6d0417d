"""Per-vertebra cancer labels from a free-text radiology spine report (SCT §4, design §5).

:func:`label_report` reads a report the way a careful annotator would and returns, for every imaged
vertebra and every finding of ``CANCER_FINDINGS``, ``positive`` / ``negative`` / ``unknown``, plus a
study-level label per finding (SCT's multiple-instance "bag" label for "widespread metastatic
disease"), the Bilsky grade of each level where one is written and the transitional level (L6 / T13)
where the report states one. It is a general clinical-language reader, not a matcher of known
sentences:

1. **Sections.** Headings ("Clinical history", "Technique", "Findings", "Impression", "Conclusion",
   "Opinion", …) are recognised by their words; only findings and impression/conclusion text is
   read, so "? cord compression" in the referral or "T1-weighted sagittal" in the technique sets
   nothing. A report without headings is read whole.
2. **Sentences.** Lines are joined unless a bullet, a numbered item, a "Key: value" line, a blank line
   or sentence punctuation ends them; sentences split at full stops (not decimals or abbreviations)
   and at question marks that end a word ("? metastasis" is a query, not an end).
3. **Level mentions.** ``T10``, ``D12`` (dorsal), ``the tenth thoracic vertebra``; lists ("T4, T7
   and L2"); ranges ("T10-L2", "T10 to L2 inclusive", "from T10 to L2", "between T10 and L2",
   "T4-6") expanded over the patient's own level sequence, so a range over the thoracolumbar
   junction includes T13 when the spine has one; disc notations ("L4/5", "T11-12") name both
   vertebrae. MR sequence names ("T1 hypointense", "sagittal T2") and nerve roots ("the L5 nerve
   root") are not levels. Regions ("the lumbar spine", "the lower thoracic spine", "the
   thoracolumbar junction") denote the imaged levels they contain.
4. **Clauses.** Sentences split into clauses at commas, semicolons, colons and contrast words. A
   clause with a finding but no level takes the levels of the clause before it in the sentence
   ("there is a lesion in T5, in keeping with a metastasis"; "T5: epidural disease with cord
   compression"), a clause with levels but no finding adds them to the finding before it ("…
   widespread metastatic disease, most marked at T4 and T7"); a negated clause after a semicolon
   stands alone (a global negation), as do clauses that say "other", "further", "elsewhere".
5. **Findings lexicon** (UK and US spellings): metastasis (metastatic deposit, secondaries,
   marrow-replacing or -infiltrating lesion, replaced by tumour, myeloma, lytic/sclerotic lesions; a
   bare "lesion" only in a bony context or right after talk of metastases; a haemangioma or bone
   island is a benign lesion, so negative), fracture (compression deformity, wedging, collapse,
   vertebra plana, vertebral height loss — never disc height; "pathological" fracture also asserts
   the metastasis), cord compression (compression/effacement of the cord or cauda equina, MSCC,
   MESCC; Bilsky 2 and 3 are compression by definition). "Metastatic cord compression" and
   epidural tumour describe the canal, not a vertebral-body metastasis. Normality statements negate
   the finding of their subject: "marrow signal is normal" (metastasis), "vertebral body heights
   are maintained" (fracture), "the cord is normal in calibre" (cord compression).
6. **Polarity within the clause** (NegEx style): a negation before the finding ("no", "no evidence
   of", "without", "negative for", "free of", "clear of", "not") or after it ("is not seen", "are
   not identified") makes it negative; a hedge anywhere in the clause ("possible", "probable",
   "likely", "suspicious for", "cannot be excluded", "indeterminate", "equivocal", "may represent",
   "favoured", "query") makes it uncertain, unless a negation came first ("no lesion suspicious for
   metastasis"); "?" hedges only the word after it ("? pathological fracture" questions the cause,
   not the fracture). "Key: value" lines ("Cord compression: No", "Metastases: Yes - T4") take the
   value's answer.
7. **Scope.** A statement about named levels sets those levels. A region statement sets the
   region's imaged levels when it is negative, universal ("every level of …") or "throughout the
   …"; otherwise ("multiple metastases in the thoracic spine") it sets only the study label. A
   statement without a level sets every imaged level when negative or universal ("no evidence of
   metastatic disease", "every imaged vertebral body"), else ("widespread metastatic disease",
   "further small deposits") only the study label.

Label rules (SCT §4): hedged → ``unknown``; where two statements set one label the more specific
scope wins (named levels over regions over whole-spine statements), then positive over uncertain
over negative; an unmentioned level is ``unknown`` except for cord compression, which is ``negative``
unless mentioned. Study label: ``positive`` if any statement asserts the finding, ``negative`` if
every imaged level is negative and nothing was hedged, else ``unknown``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from operators.core.gradings import BILSKY_MR_GRADES, CANCER_FINDINGS
from operators.core.levels import CERVICAL, LUMBAR, SACRAL, THORACIC, TRANSITIONAL_AFTER, is_level, levels_with_transitional

POSITIVE = "positive"
NEGATIVE = "negative"
UNKNOWN = "unknown"
#: Status of a hedged statement; it becomes the label ``unknown``.
UNCERTAIN = "uncertain"

METASTASIS, FRACTURE, CORD_COMPRESSION = "metastasis", "fracture", "cord_compression"
assert (METASTASIS, FRACTURE, CORD_COMPRESSION) == CANCER_FINDINGS

#: Statement scopes, most specific first (the rank decides between statements on one label).
SCOPE_RANK: dict[str, int] = {"level": 0, "region": 1, "spine": 2, "study": 3}
_STATUS_RANK = {POSITIVE: 0, UNCERTAIN: 1, NEGATIVE: 2}


@dataclass(frozen=True)
class Statement:
    """One thing the report says about one finding.

    Attributes:
        finding: a ``CANCER_FINDINGS`` name.
        status: ``positive`` | ``negative`` | ``uncertain``.
        scope: ``level`` (named levels), ``region`` (a region's levels), ``spine`` (every imaged
            level) or ``study`` (the study label only, no level).
        levels: the vertebrae whose label the statement sets (empty for ``study``).
        sentence: the sentence it was read from.
        section: ``findings`` or ``impression``.
    """

    finding: str
    status: str
    scope: str
    levels: tuple[str, ...]
    sentence: str
    section: str


@dataclass(frozen=True)
class ReportLabels:
    """Labels read from one report.

    Attributes:
        vertebra_labels: imaged level → finding (``CANCER_FINDINGS``) → positive/negative/unknown.
        study_labels: finding → positive/negative/unknown (any level).
        bilsky_grades: level → MR Bilsky grade (``BILSKY_MR_GRADES``) where the report writes one.
        transitional: ``"L6"`` / ``"T13"`` when stated, ``None`` when normal segmentation is stated,
            ``"unknown"`` when not discussed.
        statements: what each label came from, in reading order.
    """

    vertebra_labels: dict[str, dict[str, str]]
    study_labels: dict[str, str]
    bilsky_grades: dict[str, str]
    transitional: str | None
    statements: tuple[Statement, ...]


# ---------------------------------------------------------------------------------------------
# Sections and sentences
# ---------------------------------------------------------------------------------------------

#: Heading words → the section they open. Only findings and impression are read.
_SECTION_HEADINGS: dict[str, str] = {
    **dict.fromkeys(("history", "clinical history", "clinical details", "clinical information", "clinical indication",
                     "indication", "indications", "reason for exam", "reason for examination", "reason for study",
                     "clinical question", "referral", "presenting complaint", "clinical"), "history"),
    **dict.fromkeys(("technique", "sequences", "protocol", "procedure", "method", "imaging protocol"), "technique"),
    **dict.fromkeys(("comparison", "comparisons", "prior", "prior imaging", "previous imaging", "previous"), "comparison"),
    **dict.fromkeys(("examination", "exam", "study", "modality"), "header"),
    **dict.fromkeys(("findings", "report", "description", "observations", "results"), "findings"),
    **dict.fromkeys(("impression", "conclusion", "conclusions", "opinion", "summary", "comment", "comments",
                     "interpretation", "diagnosis"), "impression"),
}
_READ_SECTIONS = ("findings", "impression")
_HEADING = re.compile(r"^\s*([A-Za-z][A-Za-z /&]{1,40}?)\s*(?::|$)\s*(.*)$")
_BULLET = re.compile(r"^\s*(?:[-\u2022*]|\d{1,2}[.)])\s+")
_KEY_LINE = re.compile(r"^\s*[^:.]{1,60}:\s")
_RECORD_LENGTH = 60
_ABBREVIATIONS = ("e.g", "i.e", "approx", "cf", "vs", "fig", "dr", "incl", "resp")
_SENTENCE_END = re.compile(r"(?<=[^\s.])([.!]|(?<=\w)\?)\s+(?=[A-Z0-9?(\"'])")

_DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
                         "\u00a0": " ", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def report_sections(text: str) -> list[tuple[str, str]]:
    """``[(section, body)]`` in order; without any heading the whole text is ``findings``."""
    sections: list[tuple[str, list[str]]] = []
    for line in text.translate(_DASHES).splitlines():
        match = _HEADING.match(line)
        heading = match and _SECTION_HEADINGS.get(" ".join(match.group(1).lower().split()))
        if heading:
            sections.append((heading, [match.group(2)] if match.group(2).strip() else []))
        elif sections:
            sections[-1][1].append(line)
        else:
            sections.append(("", [line]))
    if not any(name for name, _ in sections):
        return [("findings", text.translate(_DASHES))]
    return [(name, "\n".join(lines)) for name, lines in sections if name]


def split_sentences(body: str) -> list[str]:
    """Sentences of a section body: hard-wrapped lines rejoined, bullets and numbering stripped."""
    blocks: list[str] = []
    open_block = False
    for raw in body.splitlines():
        line = raw.strip()
        if not line:
            open_block = False
            continue
        starts_item = bool(_BULLET.match(line) or _KEY_LINE.match(line))
        line = _BULLET.sub("", line)
        if open_block and not starts_item:
            blocks[-1] += " " + line
        else:
            blocks.append(line)
        # A short "Key: value" line is a record of its own; other lines may be hard-wrapped prose.
        record = bool(_KEY_LINE.match(line)) and len(line) <= _RECORD_LENGTH
        open_block = not record and not line.endswith((".", ":", ";", "!", "?"))
    sentences: list[str] = []
    for block in blocks:
        start = 0
        for match in _SENTENCE_END.finditer(block):
            before = block[start : match.start()].rsplit(" ", 1)[-1].lower()
            if match.group(1) == "." and before.rstrip(".") in _ABBREVIATIONS:
                continue
            sentences.append(block[start : match.end(1)].strip())
            start = match.end()
        sentences.append(block[start:].strip())
    return [s for s in sentences if s]


# ---------------------------------------------------------------------------------------------
# Level mentions
# ---------------------------------------------------------------------------------------------

#: The transitional levels by the segment they extend (a 13th thoracic, a 6th lumbar vertebra).
EXTRA_THORACIC = next(level for level, after in TRANSITIONAL_AFTER.items() if after in THORACIC)
EXTRA_LUMBAR = next(level for level, after in TRANSITIONAL_AFTER.items() if after in LUMBAR)
_SEGMENT_WORDS = {"cervical": "C", "thoracic": "T", "dorsal": "T", "lumbar": "L", "sacral": "S"}
_ORDINAL_WORDS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
                  "eleventh", "twelfth", "thirteenth")

#: MR sequence names, which look like levels T1/T2: "T1 hypointense", "sagittal T2", "T1 and T2 signal".
_SEQUENCE = re.compile(
    r"\bT[12]\*?(?:\s*(?:,|and|/|or)\s*T[12]\*?)*(?=[\s-]*(?:weighted|w\b|hypo|hyper|iso|signal|intensity|fat|fs\b|"
    r"tse|fse|se\b|images?|sequences?|post|pre\b|flair|stir|gre|sag|ax|cor|tirm|\*|-?w\b|/\s*stir|space|dixon))"
    r"|\b(?:sagittal|axial|coronal|sag|ax|cor|high|low|bright|dark|intermediate)\s+T[12]\b\*?"
    r"|\b(?:STIR|DWI|ADC)\b",
    re.IGNORECASE,
)
_LEVEL_TOKEN = re.compile(
    r"\b(?:(?P<letter>[CTLS]|D(?=\d))(?P<number>\d{1,2})(?:\s*(?P<sep>[-/])\s*(?P<short>\d{1,2})(?![\d/]))?"
    r"|(?P<ordinal>" + "|".join(_ORDINAL_WORDS) + r"|\d{1,2}(?:st|nd|rd|th))\s+(?P<word>cervical|thoracic|dorsal|lumbar|sacral)"
    r"\s+(?:vertebral\s+bod(?:y|ies)|vertebrae?|segment|level|body))\b"
)
_NOT_A_VERTEBRA_AFTER = re.compile(r"^\s*(?:and\s+\w+\s+)?(?:nerve|roots?\b|radicul|dermatom|myotom|distribution|ganglion)",
                                   re.IGNORECASE)
_RANGE_JOIN = re.compile(r"^\s*(?:-|to|through|thru|until|till)\s*$", re.IGNORECASE)
_LIST_JOIN = re.compile(r"^\s*(?:,|and|or|&|,\s*and|,\s*or|as well as|plus)\s*$", re.IGNORECASE)
_RANGE_FROM = re.compile(r"\b(?:from|between)\s+(?:the\s+)?(?:levels?\s+)?$", re.IGNORECASE)
_INCLUSIVE = re.compile(r"^\s*(?:inclusive(?:ly)?|levels)\b", re.IGNORECASE)


@dataclass(frozen=True)
class _LevelToken:
    start: int
    end: int
    level: str
    partner: str | None = None  # the second level of a disc / short-range notation ("L4-5")
    separator: str | None = None


@dataclass(frozen=True)
class LevelMention:
    """A written level expression: its character span and the vertebrae it names, cranial first."""

    start: int
    end: int
    levels: tuple[str, ...]


def _token_level(letter: str, number: int) -> str | None:
    dorsal = letter == "D"
    name = f"{'T' if dorsal else letter}{number}"
    return name if is_level(name) and (not dorsal or name in THORACIC) else None


def _level_tokens(text: str) -> list[_LevelToken]:
    tokens = []
    for match in _LEVEL_TOKEN.finditer(text):
        if _NOT_A_VERTEBRA_AFTER.match(text[match.end() :]):
            continue
        if match.group("ordinal"):
            ordinal = match.group("ordinal").lower()
            number = _ORDINAL_WORDS.index(ordinal) + 1 if ordinal in _ORDINAL_WORDS else int(ordinal[:-2])
            level = _token_level(_SEGMENT_WORDS[match.group("word").lower()], number)
            if level:
                tokens.append(_LevelToken(match.start(), match.end(), level))
            continue
        level = _token_level(match.group("letter"), int(match.group("number")))
        if level is None:
            continue
        partner = _token_level(level[0], int(match.group("short"))) if match.group("short") else None
        if partner is None:
            end = match.start("sep") if match.group("sep") else match.end()
            tokens.append(_LevelToken(match.start(), end, level))
        else:
            tokens.append(_LevelToken(match.start(), match.end(), level, partner, match.group("sep")))
    return tokens


def _span(first: str, last: str, sequence: Sequence[str]) -> tuple[str, ...]:
    if first not in sequence or last not in sequence:
        return (first, last)
    i, j = sorted((sequence.index(first), sequence.index(last)))
    return tuple(sequence[i : j + 1])


def level_mentions(text: str, sequence: Sequence[str]) -> list[LevelMention]:
    """Level expressions in ``text`` (MR sequence names already masked), lists and ranges merged.

    ``sequence`` is the patient's cranial → caudal level sequence (with T13/L6 when present); ranges
    are expanded over it. A dash between two adjacent levels is a disc ("L4-L5") and names both.
    """
    mentions: list[LevelMention] = []
    tokens = _level_tokens(text)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        start, end = token.start, token.end
        if token.partner:
            levels = _span(token.level, token.partner, sequence) if token.separator == "-" else (token.level, token.partner)
        else:
            levels = (token.level,)
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        between = text[end : following.start] if following else ""
        prefix = _RANGE_FROM.search(text[:start])
        if following and not following.partner and (
            _RANGE_JOIN.match(between) or (prefix and re.match(r"^\s*(?:and|to|-)\s*$", between))
        ) and not token.partner:
            levels = _span(token.level, following.level, sequence)
            start = prefix.start() if prefix else start
            end = following.end
            index += 1
        inclusive = _INCLUSIVE.match(text[end:])
        if inclusive:
            end += inclusive.end()
        if mentions and _LIST_JOIN.match(text[mentions[-1].end : start]):
            previous = mentions.pop()
            mentions.append(LevelMention(previous.start, end, previous.levels + tuple(l for l in levels if l not in previous.levels)))
        else:
            mentions.append(LevelMention(start, end, levels))
        index += 1
    return mentions


def _with_transitional(group: Iterable[str]) -> tuple[str, ...]:
    """A region's levels plus any transitional level that follows one of them (T13 after T12)."""
    members = list(group)
    for extra, after in TRANSITIONAL_AFTER.items():
        if after in members:
            members.insert(members.index(after) + 1, extra)
    return tuple(members)


#: Region phrase → its levels. Thoracic thirds T1–4 / T5–8 / T9–12; junctions span two levels either side.
REGION_LEVELS: dict[str, tuple[str, ...]] = {
    "cervical": CERVICAL,
    "upper cervical": CERVICAL[:2],
    "mid cervical": CERVICAL[2:5],
    "lower cervical": CERVICAL[4:],
    "thoracic": _with_transitional(THORACIC),
    "upper thoracic": THORACIC[:4],
    "mid thoracic": THORACIC[4:8],
    "lower thoracic": _with_transitional(THORACIC[8:]),
    "lumbar": _with_transitional(LUMBAR),
    "upper lumbar": LUMBAR[:2],
    "mid lumbar": LUMBAR[2:3],
    "lower lumbar": _with_transitional(LUMBAR[3:]),
    "sacral": SACRAL,
    "cervicothoracic": CERVICAL[-1:] + THORACIC[:1],
    "thoracolumbar": _with_transitional(THORACIC[-2:] + LUMBAR[:2]),
    "lumbosacral": _with_transitional(LUMBAR[-1:] + SACRAL),
    "craniocervical": CERVICAL[:2],
}
_REGION = re.compile(
    r"\b(?:(?P<part>upper|mid|middle|lower|high|low)[\s-]+)?(?P<name>cervical|thoracic|dorsal|lumbar|sacral|"
    r"cervicothoracic|thoracolumbar|lumbosacral|craniocervical)\s+(?:spine|region|vertebrae|vertebral\s+bodies|levels|"
    r"column|segments|junction)\b|\b(?P<sacrum>sacrum)\b",
    re.IGNORECASE,
)


def _region_levels(match: re.Match[str]) -> tuple[str, ...]:
    if match.group("sacrum"):
        return REGION_LEVELS["sacral"]
    name = match.group("name").lower().replace("dorsal", "thoracic")
    part = (match.group("part") or "").lower()
    part = {"middle": "mid", "high": "upper", "low": "lower"}.get(part, part)
    return REGION_LEVELS.get(f"{part} {name}".strip(), REGION_LEVELS[name])


# ---------------------------------------------------------------------------------------------
# Lexicon
# ---------------------------------------------------------------------------------------------

_CORD_TERM = re.compile(
    r"(?:metastatic\s+)?(?:epidural\s+)?(?:(?:spinal\s+)?cord|cauda\s+equina|conus(?:\s+medullaris)?)\s+"
    r"(?:compression|impingement|effacement|(?:is\s+|being\s+)?compressed)"
    r"|compression\s+(?:of|on)\s+(?:the\s+)?(?:(?:spinal\s+)?cord|cauda\s+equina|conus)"
    r"|(?:compress|effac|flatten|indent)\w*\s+(?:of\s+|on\s+)?(?:the\s+)?(?:(?:spinal\s+)?cord|cauda\s+equina|conus)"
    r"|\bm(?:e)?scc\b"
)
#: A bare "compression" is cord compression in a sentence about the cord ("cord normal, without compression").
_BARE_COMPRESSION = re.compile(r"\bcompress(?:ion|ed|ing)\b(?!\s+(?:fracture|deformit|of\s+(?:the\s+)?(?:thecal|nerve|root|exit)))")
_CORD_CONTEXT = re.compile(r"\b(?:spinal\s+cord|cord|cauda\s+equina|conus)\b")
_NERVE_CONTEXT = re.compile(r"\b(?:nerve|root|roots|foramen|foramina|foraminal|thecal)\b")
_EPIDURAL = re.compile(
    r"(?:metastatic\s+)?epidural(?:\s+(?:metasta\w*|tumou?rs?|disease|deposits?|soft[\s-]+tissue|extension|component|mass|"
    r"spread|involvement|malignan\w*))*"
    r"|(?:tumou?r|soft[\s-]+tissue)(?:\s+[\w-]+){0,2}?\s+(?:extend\w*|extension)\s+into\s+(?:the\s+)?(?:spinal\s+)?canal"
    r"|(?:extend\w*|extension)\s+(?:of\s+\w+\s+)?into\s+the\s+(?:spinal\s+)?canal"
)
#: After "metastatic": the word describes the canal, not a vertebral body ("metastatic compression of the cord").
_MODIFIES_CANAL = re.compile(r"\s+(?:spinal\s+)?(?:epidural|cord|cauda|compression|impingement|mscc|escc)")
_METASTASIS_TERM = re.compile(
    r"\bmetasta\w*|\bmets\b|\bsecondaries\b|\bsecondary\s+(?:deposits?|lesions?|disease|tumou?rs?|malignan\w*|neoplas\w*)"
    r"|\b(?:osseous|bony|bone|skeletal|spinal|vertebral)\s+secondar\w*"
    r"|(?<!calcium )(?<!crystal )(?<!fat )(?<!fatty )(?<!amyloid )\bdeposits?\b"
    r"|\bmarrow[\s-]+replac\w*|\breplaced\s+(?:\w+\s+)?by\s+(?:tumou?r|malignan\w*|metasta\w*|neoplas\w*)"
    r"|\b(?:marrow|tumou?r|malignant|neoplastic|myelomatous|lymphomatous|diffuse)\s+(?:marrow\s+)?infiltrat\w*"
    r"|\bmyeloma\w*|\bplasmacytoma\w*|\blymphoma\w*|\bmalignan\w*|\bneoplas\w*|\btumou?rs?\b"
)
#: A "lesion" (or a lytic / blastic one) is a metastasis only in a bony context (or right after talk of
#: metastases), and defers to the sentence's characterisation ("…, suspicious for metastasis").
_LESION_TERM = re.compile(r"\blesions?\b|\b(?:osteo)?lytic\b|\b(?:osteo)?blastic\b|\bdestructive\b")
#: Marrow signal / a focus: a metastasis term only when hedged ("equivocal signal in T5") or negated.
_SIGNAL_TERM = re.compile(r"\b(?:marrow\s+)?(?:signal|density|focus|foci)(?:\s+(?:change|abnormality|alteration))?\b"
                          r"|\bmarrow\s+(?:abnormalit(?:y|ies)|changes?|replacement)\b")
_BONE_CONTEXT = re.compile(r"\b(?:marrow|bone|bony|osseous|vertebra\w*|skeletal|sclerotic|lytic|spine|spinal|focal)\b")
_OTHER_ORGAN = re.compile(
    r"\b(?:kidneys?|renal|liver|hepatic|lungs?|pulmonary|thyroid|adrenal|pancrea\w*|spleen|splenic|bladder|uter\w*|"
    r"ovar\w*|breast|skin|soft\s+tissue|paraspinal|paravertebral|intradural|intramedullary|cord|conus|cauda|nerve|"
    r"discs?|endplates?|modic|cysts?|nodes?)\b"
)
_BENIGN_TERM = re.compile(r"\bha?emangioma\w*|\bbone\s+islands?\b|\benostos\w*|\bbenign\s+(?:\w+\s+)?(?:lesion|focus)\w*")
_FRACTURE_TERM = re.compile(
    r"\bfractur\w*|\bcompression\s+deformit\w*|\b(?:wedge|biconcave|crush|burst)\b(?:\s+\w+)?\s+(?:deformit\w*|fractur\w*|"
    r"pattern)|\b(?:anterior\s+)?wedg(?:ing|ed)\b|\bbiconcave\b|\bcollaps\w*|\bvertebra\s+plana\b|\bgenant\b"
    r"|(?<!disc )(?<!disk )(?<!disc space )\bheight\s+loss\b"
    r"|\b(?:loss|reduction|decrease|reduced)\s+(?:in|of)\s+(?:the\s+)?(?:vertebral\s+)?(?:body\s+)?height\b"
    r"|\b(?:reduced|decreased)\s+(?:vertebral\s+)?(?:body\s+)?height\b"
)
_NOT_A_FRACTURE = re.compile(r"\b(?:disc|disk|lung|lobar|lobe)\s+(?:space\s+)?$")
_PATHOLOGICAL = re.compile(r"\bpatholog\w*(?=(?:\s+[\w-]+){0,2}?\s+(?:fractur|collaps|compression\s+deformit|wedg))")
#: Bilsky grades that mean the cord is compressed (2: CSF still visible, 3: none); 1c only abuts it.
_COMPRESSING_BILSKY = ("2", "3")
_BILSKY = re.compile(r"\b(?:bilsky|escc)(?:\s+(?:grade|type|score|classification))?\s*[:=]?\s*([0-3])\s*([abc])?\b")

#: Normality statements: a subject and a predicate in one clause negate the subject's finding.
_NORMAL_SUBJECTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (METASTASIS, re.compile(r"(?<!endplate )\b(?:bone\s+)?marrow(?:\s+signal)?\b|\bbone\s+density\b|\bosseous\s+structures\b"
                            r"|\bvertebral\s+bodies\b")),
    (FRACTURE, re.compile(r"\b(?:vertebral\s+)?(?:body\s+)?heights?\b|\bvertebral\s+bodies\b")),
    (CORD_COMPRESSION, re.compile(r"\b(?:spinal\s+)?cord\b(?!\s+compress)|\bcauda\s+equina\b")),
)
_NORMAL_PREDICATE = re.compile(r"\b(?:normal|within\s+normal\s+limits|unremarkable|maintained|preserved|intact|"
                               r"homogeneous|satisfactory|clear)\b")
_DISC = re.compile(r"\bdis[ck]s?\b")

_HEDGE = re.compile(
    r"\b(?:possibl[ey]|probabl[ey]|(?:un)?likely|questionabl[ey]|suspicious\s+(?:for|of)|suspect(?:ed)?|suspicion\s+(?:for|of)|"
    r"suggestive\s+of|concerning\s+(?:for|of)|worrisome\s+for|indeterminate|equivocal|uncertain|presumed|presumably|"
    r"cannot\s+(?:be\s+)?(?:excluded?|ruled\s+out)|can\s*not\s+(?:be\s+)?(?:excluded?|ruled\s+out)|"
    r"not\s+(?:be\s+)?(?:excluded|ruled\s+out)|may\s+(?:represent|be|reflect|indicate|relate)|might|could\s+(?:represent|be|reflect)|"
    r"favou?red|differential|versus|vs|raises?\s+the\s+possibility|query|queried|not\s+(?:entirely\s+)?certain)\b"
)
#: Age and cause of a finding: hedging these ("likely chronic") does not hedge the finding.
_ATTRIBUTE = re.compile(r"\b(?:chronic|acute|subacute|old|recent|new|healed|healing|long-?standing|osteoporotic|"
                        r"insufficiency|traumatic|benign|degenerative|senile)\b")
_QUERY_MARK = re.compile(r"\?\s*(?:(?:a|an|the|small|early|subtle|mild|minor|tiny|new|some)\s+)*(?=\w)")
_NEGATION_BEFORE = re.compile(
    r"\b(?:no|not|without|negative\s+for|free\s+of|clear\s+of|absence\s+of|nor|neither|nil)\b"
)
_NEGATION_AFTER = re.compile(
    r"\b(?:(?:is|are|was|were)\s+)?not\s+(?:seen|identified|demonstrated|present|evident|visuali[sz]ed|detected|"
    r"appreciated|shown|noted|apparent|found)\b|\b(?:is|are)\s+absent\b|\bhas\s+resolved\b"
    r"|\b(?:is|are|has\s+been|have\s+been)\s+(?:excluded|ruled\s+out)\b"
)
_COMPLEMENT = re.compile(r"\b(?:other|others|further|remaining|remainder|elsewhere|additional|rest\s+of)\b")
_UNIVERSAL = re.compile(r"\b(?:every|all|each|entire)\b")
_EXTENT = re.compile(r"\b(?:widespread|multiple|several|numerous|innumerable|extensive|diffuse(?:ly)?|multifocal|"
                     r"multi-?level|scattered|many|various|disseminated|further|additional|other)\b")
_THROUGHOUT = re.compile(r"\bthroughout\b")
_ANSWER = re.compile(r"^\s*(?:(?P<yes>yes|present|positive|seen|identified|confirmed)|(?P<no>no|none|nil|negative|absent|"
                     r"not\s+(?:identified|seen|present|demonstrated|evident))|(?P<maybe>possible|probable|equivocal|"
                     r"indeterminate|uncertain|\?))\b", re.IGNORECASE)
_SPLIT = re.compile(r"[,;:]|\s(?:but|however|although|though|whereas|while|except|apart\s+from|aside\s+from)\b")
#: Words a clause of levels alone may hold and still add its levels to the finding before it
#: ("…, most marked at T4 and T7"; "Metastases: T4, L2").
_ELABORATION_WORDS = frozenset((
    "and", "or", "at", "in", "of", "on", "the", "with", "including", "involving", "affecting", "especially",
    "particularly", "notably", "mainly", "mostly", "predominantly", "chiefly", "most", "marked", "pronounced", "severe",
    "largest", "dominant", "worst", "level", "levels", "vertebra", "vertebrae", "body", "bodies", "vertebral", "also", "e.g",
    "eg", "namely", "i.e", "ie", "yes", "present", "as", "well", "inclusive", "from", "to", "between", "through", "all",
))


@dataclass
class _Term:
    start: int
    end: int
    finding: str
    kind: str  # term | lesion | signal | benign | subject | pathological


@dataclass
class _Clause:
    start: int
    end: int
    boundary: str  # what separated it from the clause before: "", ",", ";", ":" or a contrast word
    text: str = ""
    levels: tuple[str, ...] = ()
    region: tuple[str, ...] | None = None
    terms: list[_Term] | None = None
    grades: tuple[str, ...] = ()


def _overlaps(start: int, end: int, spans: Iterable[tuple[int, int]]) -> bool:
    return any(start < b and a < end for a, b in spans)


def _finding_terms(low: str, follows_metastasis: bool, has_levels: bool) -> list[_Term]:
    """Finding words in a (lower-cased, sequence-masked) sentence, each with its finding.

    ``follows_metastasis``: the sentence before spoke of metastases (so "further lesions" are too);
    ``has_levels``: the sentence names a vertebra (so a "lesion" there is a bone lesion).
    """
    terms: list[_Term] = []
    cord = [(m.start(), m.end()) for m in _CORD_TERM.finditer(low)]
    terms += [_Term(a, b, CORD_COMPRESSION, "term") for a, b in cord]
    if _CORD_CONTEXT.search(low):
        for match in _BARE_COMPRESSION.finditer(low):
            if not _overlaps(match.start(), match.end(), cord) and not _NERVE_CONTEXT.search(low[max(0, match.start() - 25) : match.start()]):
                terms.append(_Term(match.start(), match.end(), CORD_COMPRESSION, "term"))
    epidural = [(m.start(), m.end()) for m in _EPIDURAL.finditer(low)]
    canal_talk = bool(epidural) or " canal" in low
    for match in _METASTASIS_TERM.finditer(low):
        if _overlaps(match.start(), match.end(), cord + epidural) or _MODIFIES_CANAL.match(low, match.end()):
            continue
        if match.group(0).startswith("tumo") and canal_talk:
            continue  # tumour in the canal is the epidural component, not a vertebral-body deposit
        terms.append(_Term(match.start(), match.end(), METASTASIS, "term"))
    benign = [(m.start(), m.end()) for m in _BENIGN_TERM.finditer(low)]
    terms += [_Term(a, b, METASTASIS, "benign") for a, b in benign]
    if not benign:
        about_metastasis = follows_metastasis or any(t.finding == METASTASIS for t in terms) or bool(has_levels)
        if not _OTHER_ORGAN.search(low) and (about_metastasis or _BONE_CONTEXT.search(low)):
            terms += [_Term(m.start(), m.end(), METASTASIS, "lesion") for m in _LESION_TERM.finditer(low)]
        if not _OTHER_ORGAN.search(low):
            terms += [_Term(m.start(), m.end(), METASTASIS, "signal") for m in _SIGNAL_TERM.finditer(low)]
    for match in _FRACTURE_TERM.finditer(low):
        if not _NOT_A_FRACTURE.search(low[: match.start()]):
            terms.append(_Term(match.start(), match.end(), FRACTURE, "term"))
    terms += [_Term(m.start(), m.end(), METASTASIS, "pathological") for m in _PATHOLOGICAL.finditer(low)]
    for finding, subject in _NORMAL_SUBJECTS:
        for match in subject.finditer(low):
            terms.append(_Term(match.start(), match.end(), finding, "subject"))
    return sorted(terms, key=lambda t: t.start)


def _status(term: _Term, clause: str, offset: int, queried: bool) -> str | None:
    """Polarity of one term inside its clause; ``None`` when the term asserts nothing there.

    ``queried``: a "?" stands right before a word of this term's finding in the clause.
    """
    start, end = term.start - offset, term.end - offset
    hedges = [m for m in _HEDGE.finditer(clause)]
    hedge_spans = [(m.start(), m.end()) for m in hedges]
    negations = [m for m in _NEGATION_BEFORE.finditer(clause[:start]) if not _overlaps(m.start(), m.end(), hedge_spans)]
    first_hedge = min((m.start() for m in hedges), default=None)
    negated_before = bool(negations) and (first_hedge is None or negations[0].start() < first_hedge)
    negated_after = any(not _overlaps(m.start(), m.end(), hedge_spans) for m in _NEGATION_AFTER.finditer(clause[end:]))
    if term.kind == "subject":
        about_discs = term.finding == FRACTURE and _DISC.search(clause)
        if about_discs or not _NORMAL_PREDICATE.search(clause) or re.search(r"\babnormal", clause):
            return None
        return NEGATIVE
    if term.kind == "benign":
        return NEGATIVE
    if negated_before:
        status = NEGATIVE
    elif hedges or queried:
        status = UNCERTAIN
    elif negated_after:
        status = NEGATIVE
    else:
        status = POSITIVE
    if term.kind == "signal" and status == POSITIVE:
        return None  # a signal change or focus asserts no metastasis by itself
    if term.kind == "pathological" and status == NEGATIVE:
        return None  # "no pathological fracture" denies the fracture, not every metastasis
    return status


# ---------------------------------------------------------------------------------------------
# Reading a sentence
# ---------------------------------------------------------------------------------------------


@dataclass
class _Reading:
    statements: list[Statement]
    grades: dict[str, str]
    mentions_metastasis: bool


def _mask(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def _clauses(masked: str, mentions: Sequence[LevelMention]) -> list[_Clause]:
    protected = [(m.start, m.end) for m in mentions]
    clauses: list[_Clause] = []
    start, boundary, depth = 0, "", 0
    cuts = []
    for match in _SPLIT.finditer(masked):
        if _overlaps(match.start(), match.end(), protected):
            continue
        depth = masked[: match.start()].count("(") - masked[: match.start()].count(")")
        if depth > 0:
            continue
        cuts.append(match)
    for match in cuts:
        clauses.append(_Clause(start, match.start(), boundary))
        start, boundary = match.end(), match.group(0).strip()
    clauses.append(_Clause(start, len(masked), boundary))
    return clauses


def _attach_hedges(clauses: list[_Clause]) -> list[_Clause]:
    """Merge a clause that only hedges ("…, possibly developmental") into the clause before it.

    A hedge on an attribute ("…, likely chronic", "…, probably osteoporotic") leaves the finding
    certain, so that clause stays apart.
    """
    merged: list[_Clause] = []
    for clause in clauses:
        bare = not clause.terms and not clause.levels and not clause.grades and clause.region is None
        if merged and bare and _HEDGE.search(clause.text) and not _ATTRIBUTE.search(clause.text):
            previous = merged[-1]
            previous.end, previous.text = clause.end, previous.text + " " + clause.text
        else:
            merged.append(clause)
    return merged


def _key_value(sentence: str) -> tuple[str, str] | None:
    """``("Cord compression", " No")`` for a line of the form ``key: value`` (key up to 60 characters);
    ``None`` otherwise. Whether it is a proforma record is decided by what the key and value hold."""
    key, sep, value = sentence.partition(":")
    if not sep or not value.strip() or len(key) > 60:
        return None
    return key, value


def _read_sentence(sentence: str, section: str, sequence: Sequence[str], imaged: Sequence[str],
                   follows_metastasis: bool) -> _Reading:
    masked = _mask(sentence, _SEQUENCE)
    low = masked.lower()
    mentions = level_mentions(masked, sequence)
    regions = [(m.start(), m.end(), _region_levels(m)) for m in _REGION.finditer(masked)]
    terms = _finding_terms(low, follows_metastasis, bool(mentions))
    grades = [(m.start(), m.end(), m.group(1) + (m.group(2) or "")) for m in _BILSKY.finditer(low)]
    mentions_metastasis = any(t.finding == METASTASIS and t.kind in ("term", "benign", "lesion") for t in terms)

    key_value = _key_value(sentence)
    answer = None
    if key_value is not None:
        key_length = len(key_value[0])
        key_terms = [t for t in terms if t.end <= key_length and t.kind in ("term", "pathological")]
        value_terms = [t for t in terms if t.start > key_length]
        key_levels = [m for m in mentions if m.end <= key_length]
        answer_match = _ANSWER.match(key_value[1])
        if key_terms and not key_levels and (answer_match or (not value_terms and mentions)):
            primary = min((t.finding for t in key_terms), key=(CORD_COMPRESSION, FRACTURE, METASTASIS).index)
            terms = [next(t for t in key_terms if t.finding == primary)] + [
                t for t in value_terms if t.finding == primary]
            if answer_match:
                answer = POSITIVE if answer_match.group("yes") else NEGATIVE if answer_match.group("no") else UNCERTAIN

    states_cord = any(t.finding == CORD_COMPRESSION and t.kind == "term" for t in terms)
    clauses = _clauses(masked, mentions)
    for clause in clauses:
        clause.text = low[clause.start : clause.end]
        clause.levels = tuple(dict.fromkeys(lv for m in mentions if clause.start <= m.start < clause.end for lv in m.levels))
        inside = [r for r in regions if clause.start <= r[0] < clause.end]
        clause.region = tuple(dict.fromkeys(lv for r in inside for lv in r[2])) if inside else None
        clause.terms = [t for t in terms if clause.start <= t.start < clause.end]
        clause.grades = tuple(g for a, _, g in grades if clause.start <= a < clause.end and g in BILSKY_MR_GRADES)
    clauses = _attach_hedges(clauses)
    if answer is not None:
        # A proforma line is one statement: the key's finding with the value's answer and levels.
        merged = _Clause(0, len(masked), "", low, tuple(dict.fromkeys(lv for m in mentions for lv in m.levels)),
                         next((c.region for c in clauses if c.region), None), terms,
                         tuple(g for c in clauses for g in c.grades))
        clauses = [merged]

    statements: list[tuple[Statement, bool]] = []  # with: read from a bare "lesion" / signal word only
    level_grades: dict[str, str] = {}
    previous_levels: tuple[str, ...] = ()
    previous_findings: list[tuple[str, str, bool]] = []
    for index, clause in enumerate(clauses):
        read: list[tuple[str, str, bool]] = []  # finding, status, from a weak word
        query_ends = {clause.start + m.end() for m in _QUERY_MARK.finditer(clause.text)}
        queried = {t.finding for t in clause.terms or [] if t.start in query_ends}
        for term in clause.terms or []:
            if answer is not None and term.kind in ("term", "pathological"):
                status = answer
            else:
                status = _status(term, clause.text, clause.start, term.finding in queried)
            if status is not None:
                read.append((term.finding, status, term.kind in ("lesion", "signal")))
        has_levels = bool(clause.levels)
        complement = bool(_COMPLEMENT.search(clause.text))
        quantified = bool(_EXTENT.search(clause.text) or _UNIVERSAL.search(clause.text) or clause.region)
        levels = clause.levels
        if (read or clause.grades) and not has_levels and not complement and not quantified and previous_levels:
            negated_alone = clause.boundary == ";" and read and all(s == NEGATIVE for _, s, _ in read)
            if not negated_alone:
                levels = previous_levels
        if (read or clause.grades) and not levels and not clause.region and not complement and not quantified:
            following = next((c for c in clauses[index + 1 :] if c.levels or c.terms), None)
            if following is not None and following.levels and not following.terms:
                levels = following.levels
        if not read and has_levels and previous_findings and not clause.terms and _only_levels(clause, mentions, masked):
            read = list(previous_findings)
        for grade in clause.grades:
            for level in levels:
                current = level_grades.get(level)
                if current is None or BILSKY_MR_GRADES.index(grade) > BILSKY_MR_GRADES.index(current):
                    level_grades[level] = grade
        if not states_cord and any(g in _COMPRESSING_BILSKY for g in clause.grades) and levels:
            read.append((CORD_COMPRESSION, POSITIVE, False))  # Bilsky 2/3: the cord is compressed by definition
        for finding, status, weak in dict.fromkeys(read):
            statements.append((_statement(finding, status, levels, clause, imaged, complement, sentence, section), weak))
        if levels:
            previous_levels = levels
        if read:
            previous_findings = list(dict.fromkeys(read))
    # "Ill-defined T3 lesion, suspicious for metastasis": where the sentence characterises its lesions
    # with a hedge or a denial, the bare "lesion" asserts nothing of its own.
    characterised = any(not weak and s.finding == METASTASIS and s.status != POSITIVE for s, weak in statements)
    kept = [s for s, weak in statements if not (weak and characterised and s.finding == METASTASIS and s.status == POSITIVE)]
    return _Reading(kept, level_grades, mentions_metastasis)


def _only_levels(clause: _Clause, mentions: Sequence[LevelMention], masked: str) -> bool:
    """Whether a clause holds nothing but level mentions and elaboration words ("most marked at T4")."""
    text = masked[clause.start : clause.end]
    for mention in sorted(mentions, key=lambda m: -m.start):
        if clause.start <= mention.start < clause.end:
            text = text[: mention.start - clause.start] + " " + text[mention.end - clause.start :]
    return all(word in _ELABORATION_WORDS for word in re.findall(r"[a-z]+(?:\.[a-z]+)*", text.lower()))


def _statement(finding: str, status: str, levels: tuple[str, ...], clause: _Clause, imaged: Sequence[str],
               complement: bool, sentence: str, section: str) -> Statement:
    """Scope a finding read in a clause (module docstring, point 7)."""
    universal = bool(_UNIVERSAL.search(clause.text))
    extent = bool(_EXTENT.search(clause.text)) and not universal
    throughout = bool(_THROUGHOUT.search(clause.text)) and not extent
    if levels:
        if clause.region and (status != POSITIVE or universal or throughout):
            levels = tuple(dict.fromkeys(levels + tuple(lv for lv in imaged if lv in clause.region)))
        return Statement(finding, status, "level", levels, sentence, section)
    if clause.region is not None:
        members = tuple(lv for lv in imaged if lv in clause.region)
        if status != POSITIVE or universal or throughout:
            return Statement(finding, status, "region", members, sentence, section)
        return Statement(finding, status, "study", (), sentence, section)
    if status == NEGATIVE or (status == POSITIVE and (universal or throughout) and not complement):
        return Statement(finding, status, "spine", tuple(imaged), sentence, section)
    return Statement(finding, status, "study", (), sentence, section)


# ---------------------------------------------------------------------------------------------
# Transitional anatomy
# ---------------------------------------------------------------------------------------------

_SIX_LUMBAR = re.compile(rf"\b{EXTRA_LUMBAR}\b|\b(?:six|6)\s+(?:lumbar|non[\s-]+rib[\s-]+bearing)|\blumbari[sz](?:ed|ation)\b",
                         re.IGNORECASE)
_THIRTEEN_THORACIC = re.compile(rf"\b{EXTRA_THORACIC}\b|\b(?:thirteen|13)\s+(?:rib[\s-]+bearing|thoracic)"
                                r"|\bsupernumerary\s+rib[\s-]+bearing", re.IGNORECASE)
_NORMAL_SEGMENTATION = re.compile(
    r"\b(?:normal|conventional|standard)\s+(?:\w+\s+)?segmentation\b|\b(?:five|5)\s+lumbar(?:[\s-]+type)?\s+vertebra"
    rf"|\b(?:twelve|12)\s+(?:rib[\s-]+bearing|thoracic)|\blowest\s+rib[\s-]+bearing\s+vertebra\s+is\s+{THORACIC[-1]}\b"
    r"|\bno\s+(?:lumbosacral\s+)?transitional\b",
    re.IGNORECASE,
)


def transitional_level(findings_text: str) -> str | None:
    """``"L6"`` / ``"T13"`` when the text names one, ``None`` when it states normal segmentation, else
    ``"unknown"``."""
    text = _mask(findings_text, _SEQUENCE)
    if _SIX_LUMBAR.search(text):
        return EXTRA_LUMBAR
    if _THIRTEEN_THORACIC.search(text):
        return EXTRA_THORACIC
    return None if _NORMAL_SEGMENTATION.search(text) else UNKNOWN


# ---------------------------------------------------------------------------------------------
# The labeller
# ---------------------------------------------------------------------------------------------


def label_report(text: str, imaged_levels: Sequence[str]) -> ReportLabels:
    """Labels of every imaged vertebra, the study and the Bilsky grades from a free-text report.

    Args:
        text: the report as written (any layout; UK or US spelling).
        imaged_levels: the vertebrae in view, cranial → caudal (T13/L6 included when present); only
            these get labels, and ranges are expanded over this spine's level sequence.

    Raises:
        ValueError: if an imaged level is not a level name.
    """
    unknown_levels = [lv for lv in imaged_levels if not is_level(lv)]
    if unknown_levels:
        raise ValueError(f"not level names: {unknown_levels}")
    imaged = list(imaged_levels)
    read = [(section, sentence) for section, body in report_sections(text) if section in _READ_SECTIONS
            for sentence in split_sentences(body)]
    transitional = transitional_level("\n".join(sentence for _, sentence in read))
    sequence = levels_with_transitional(thirteen_thoracic=EXTRA_THORACIC in (transitional, *imaged),
                                        six_lumbar=EXTRA_LUMBAR in (transitional, *imaged))
    statements: list[Statement] = []
    grades: dict[str, str] = {}
    follows_metastasis = False
    last_section = ""
    for section, sentence in read:
        if section != last_section:
            follows_metastasis, last_section = False, section
        reading = _read_sentence(sentence, section, sequence, imaged, follows_metastasis)
        statements += reading.statements
        for level, grade in reading.grades.items():
            if level in imaged and (level not in grades or BILSKY_MR_GRADES.index(grade) > BILSKY_MR_GRADES.index(grades[level])):
                grades[level] = grade
        follows_metastasis = reading.mentions_metastasis or (follows_metastasis and not reading.statements)
    vertebra_labels, study_labels = combine_statements(statements, imaged)
    return ReportLabels(vertebra_labels, study_labels, grades, transitional, tuple(statements))


def combine_statements(statements: Sequence[Statement], imaged: Sequence[str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Per-level and study labels from statements (the label rules of the module docstring)."""
    best: dict[tuple[str, str], tuple[tuple[int, int], str]] = {}
    for statement in statements:
        rank = (SCOPE_RANK[statement.scope], _STATUS_RANK[statement.status])
        for level in statement.levels:
            key = (level, statement.finding)
            if key not in best or rank < best[key][0]:
                best[key] = (rank, statement.status)

    def label(level: str, finding: str) -> str:
        status = best.get((level, finding), (None, None))[1]
        if status is None:
            return NEGATIVE if finding == CORD_COMPRESSION else UNKNOWN
        return UNKNOWN if status == UNCERTAIN else status

    vertebra_labels = {level: {finding: label(level, finding) for finding in CANCER_FINDINGS} for level in imaged}
    study_labels = {}
    for finding in CANCER_FINDINGS:
        statuses = {s.status for s in statements if s.finding == finding}
        if POSITIVE in statuses:
            study_labels[finding] = POSITIVE
        elif imaged and UNCERTAIN not in statuses and all(vertebra_labels[lv][finding] == NEGATIVE for lv in imaged):
            study_labels[finding] = NEGATIVE
        else:
            study_labels[finding] = UNKNOWN
    return vertebra_labels, study_labels
