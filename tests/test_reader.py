"""Tests for folio_llm.marc.reader on real records (bibs.mrc, Cornell conformance set).

Every fixture is built at test time in tmp_path from real records: MARCXML and
OAI-PMH wrappings, a MARC-8 record, and deliberately damaged binary files.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import unicodedata
from pathlib import Path

import pymarc
import pytest

from conftest import BIBS, CONFORMANCE
from folio_llm.marc.reader import MarcItem, MarcReadError, detect_format, iter_marc

CORNELL = CONFORMANCE / "cornell-bibs.mrc"
SLIM = "http://www.loc.gov/MARC21/slim"

pytestmark = pytest.mark.skipif(not BIBS.exists(), reason=f"shared data not found at {BIBS}")


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def raw_bibs() -> list[bytes]:
    """bibs.mrc cut into its raw records (each ending with 0x1D)."""
    data = BIBS.read_bytes()
    chunks = [c + b"\x1d" for c in data.split(b"\x1d")[:-1]]
    assert len(chunks) == 4909
    return chunks


def _id_of(record: pymarc.Record) -> str | None:
    """001, else first 035$a, computed independently with pymarc's own API."""
    f001 = record.get_fields("001")
    if f001 and f001[0].data.strip():
        return f001[0].data.strip()
    for f in record.get_fields("035"):
        values = [v.strip() for v in f.get_subfields("a") if v.strip()]
        if values:
            return values[0]
    return None


def _fields(record: pymarc.Record) -> list[tuple]:
    return [
        (f.tag, f.data, tuple(f.indicators) if f.indicators else None, tuple(tuple(s) for s in f.subfields))
        for f in record.fields
    ]


def _ascii_record_with_001(raw_bibs: list[bytes], skip: int = 0) -> bytes:
    found = [c for c in raw_bibs if c.isascii() and b"\x1e" in c and c[24:27] == b"001"]
    return found[skip]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _reconciles(items: list[MarcItem]) -> None:
    ok = sum(1 for i in items if i.record is not None)
    rejected = sum(1 for i in items if i.record is None)
    assert ok + rejected == len(items)
    for i in items:
        assert (i.record is None) == (i.error is not None)
        if i.error is not None:
            assert "\n" not in i.error and i.error.strip() == i.error
    assert [i.position for i in items] == list(range(1, len(items) + 1))


# ----------------------------------------------------------------------------- real data


def test_bibs_reads_every_record_like_pymarc(raw_bibs):
    items = list(iter_marc([BIBS]))
    assert len(items) == 4909
    _reconciles(items)
    assert all(i.record is not None and i.error is None for i in items)
    assert {i.source for i in items} == {str(BIBS)}
    assert [i.index for i in items] == list(range(1, 4910))

    # the fast decoder gives exactly what pymarc's own decoder gives
    with open(BIBS, "rb") as fh:
        reference = list(pymarc.MARCReader(fh))
    for item, ref in zip(items, reference):
        assert str(item.record.leader) == str(ref.leader)
        assert _fields(item.record) == _fields(ref)

    expected_ids = [_id_of(r) for r in reference]
    assert [i.identifier for i in items] == expected_ids
    with_id = sum(1 for i in items if i.identifier)
    with_001 = sum(1 for r in reference if r.get_fields("001"))
    assert (with_id, with_001) == (4831, 3256)  # 1575 fall back to 035$a, 78 have neither


def test_cornell_records_are_utf8_and_decode(raw_bibs):
    raw = CORNELL.read_bytes()
    chunks = raw.split(b"\x1d")[:-1]
    assert len(chunks) == 20 and all(c[9:10] == b"a" for c in chunks)  # leader/09 = a: UTF-8
    items = list(iter_marc([CORNELL]))
    assert len(items) == 20 and all(i.ok for i in items)
    with open(CORNELL, "rb") as fh:
        reference = list(pymarc.MARCReader(fh))
    for item, ref in zip(items, reference):
        assert _fields(item.record) == _fields(ref)
    text = "".join(str(i.record) for i in items)
    assert any("\u05d0" <= ch <= "\u05ea" for ch in text)  # Hebrew survives
    assert "\u0301" in text  # combining accents kept as decoded (not normalised)
    assert all(i.identifier for i in items)


def test_positions_count_across_inputs(tmp_path, raw_bibs):
    a = _write(tmp_path / "a.mrc", b"".join(raw_bibs[:3]))
    b = _write(tmp_path / "b.mrc", b"".join(raw_bibs[3:5]))
    items = list(iter_marc([a, str(b)]))
    assert [(i.position, i.source, i.index) for i in items] == [
        (1, str(a), 1), (2, str(a), 2), (3, str(a), 3), (4, str(b), 1), (5, str(b), 2),
    ]
    # a single path is accepted too, not iterated character by character
    assert len(list(iter_marc(a))) == 3


# ----------------------------------------------------------------------------- formats


def _xml_collection(records, namespace=True) -> bytes:
    body = b"".join(pymarc.record_to_xml(r) for r in records)
    ns = f' xmlns="{SLIM}"'.encode() if namespace else b""
    return b'<?xml version="1.0" encoding="UTF-8"?>\n<collection' + ns + b">\n" + body + b"\n</collection>\n"


@pytest.fixture(scope="module")
def sample_records(raw_bibs) -> list[pymarc.Record]:
    return [pymarc.Record(c) for c in raw_bibs[:12]]


def test_marcxml_roundtrip_with_xmlwriter(tmp_path, sample_records):
    path = tmp_path / "records.mrc"  # wrong extension on purpose: content decides
    with open(path, "wb") as fh:
        writer = pymarc.XMLWriter(fh)
        for r in sample_records:
            writer.write(r)
        writer.close(close_fh=False)
    assert detect_format(path) == "marcxml"
    items = list(iter_marc([path]))
    assert len(items) == 12 and all(i.ok for i in items)
    for item, ref in zip(items, sample_records):
        assert str(item.record.leader) == str(ref.leader)
        assert _fields(item.record) == _fields(ref)
        assert item.identifier == _id_of(ref)


def test_marcxml_without_namespace_and_with_prefix(tmp_path, sample_records):
    plain = _write(tmp_path / "plain.xml", _xml_collection(sample_records[:4], namespace=False))
    assert detect_format(plain) == "marcxml"
    assert [_fields(i.record) for i in iter_marc(plain)] == [_fields(r) for r in sample_records[:4]]

    body = b"".join(pymarc.record_to_xml(r) for r in sample_records[:4])
    for name in (b"record", b"leader", b"controlfield", b"datafield", b"subfield"):
        body = body.replace(b"<" + name, b"<marc:" + name).replace(b"</" + name, b"</marc:" + name)
    prefixed = _write(
        tmp_path / "prefixed.xml",
        b'<?xml version="1.0"?><marc:collection xmlns:marc="' + SLIM.encode() + b'">' + body + b"</marc:collection>",
    )
    assert detect_format(prefixed) == "marcxml"
    assert [_fields(i.record) for i in iter_marc(prefixed)] == [_fields(r) for r in sample_records[:4]]


def _oai(units: list[bytes]) -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">'
        b"<responseDate>2024-05-01T00:00:00Z</responseDate>"
        b'<request verb="ListRecords" metadataPrefix="marc21">https://example.org/oai</request>\n'
        b"<ListRecords>\n" + b"\n".join(units) + b'\n<resumptionToken cursor="0"></resumptionToken>'
        b"</ListRecords></OAI-PMH>\n"
    )


def _oai_record(record: pymarc.Record | None, n: int, deleted: bool = False, marc: bytes | None = None) -> bytes:
    status = b' status="deleted"' if deleted else b""
    header = b"<header%s><identifier>oai:test:%d</identifier><datestamp>2024-05-01</datestamp></header>" % (status, n)
    if deleted:
        return b"<record>" + header + b"</record>"
    if marc is None:
        marc = pymarc.record_to_xml(record, namespace=True)
    return b"<record>" + header + b"<metadata>" + marc + b"</metadata></record>"


def test_oai_pmh_with_broken_and_deleted_records(tmp_path, sample_records):
    recs = sample_records[:6]
    broken = pymarc.record_to_xml(recs[2], namespace=True).replace(b"</subfield>", b"</subfeld>", 1)
    units = [
        _oai_record(recs[0], 0),
        _oai_record(recs[1], 1),
        _oai_record(recs[2], 2, marc=broken),  # not well-formed
        _oai_record(recs[3], 3),
        _oai_record(None, 4, deleted=True),
        _oai_record(recs[4], 5),
        _oai_record(recs[5], 6),
    ]
    path = _write(tmp_path / "oai.xml", _oai(units))
    assert detect_format(path) == "oai-pmh"
    items = list(iter_marc([path]))
    _reconciles(items)
    assert len(items) == 7
    assert [i.ok for i in items] == [True, True, False, True, False, True, True]
    assert items[2].error.startswith("malformed XML: mismatched tag at line ")
    assert items[2].identifier == _id_of(recs[2])  # salvaged from the broken chunk
    assert items[4].error == "deleted in OAI-PMH"
    assert items[4].identifier == "oai:test:4"
    good = [i for i in items if i.ok]
    assert [_fields(i.record) for i in good] == [_fields(r) for r in (recs[0], recs[1], recs[3], recs[4], recs[5])]
    assert [i.identifier for i in good] == [_id_of(r) for r in (recs[0], recs[1], recs[3], recs[4], recs[5])]


def test_xml_records_after_an_unclosed_or_garbled_record_are_still_read(tmp_path, sample_records):
    recs = sample_records[:5]
    unclosed = pymarc.record_to_xml(recs[1], namespace=True).replace(b"</record>", b"")
    amp = pymarc.record_to_xml(recs[3], namespace=True).replace(b"</leader>", b"</leader><!-- & -->", 1)
    amp = amp.replace(b"<!-- & -->", b"AT&T")
    units = [_oai_record(recs[0], 0), _oai_record(recs[1], 1, marc=unclosed), _oai_record(recs[2], 2),
             _oai_record(recs[3], 3, marc=amp), _oai_record(recs[4], 4)]
    items = list(iter_marc(_write(tmp_path / "oai.xml", _oai(units))))
    _reconciles(items)
    assert [i.ok for i in items] == [True, False, True, False, True]
    assert items[1].error.startswith("malformed XML: ")
    assert items[3].error.startswith("malformed XML: not well-formed (invalid token)")
    assert [i.identifier for i in items] == [_id_of(r) for r in recs]

    # the same in a plain MARCXML collection: an unclosed <record> ends at the next one
    body = [pymarc.record_to_xml(r, namespace=False) for r in recs]
    body[1] = body[1].replace(b"</record>", b"")
    data = b'<collection xmlns="' + SLIM.encode() + b'">' + b"\n".join(body) + b"</collection>"
    items = list(iter_marc(_write(tmp_path / "coll.xml", data)))
    assert [i.ok for i in items] == [True, False, True, True, True]


def test_truncated_xml_file(tmp_path, sample_records):
    data = _xml_collection(sample_records[:5])
    cut = data.rindex(b"<record>") + 300  # inside the last record
    items = list(iter_marc(_write(tmp_path / "cut.xml", data[:cut])))
    _reconciles(items)
    assert [i.ok for i in items] == [True, True, True, True, False]
    assert items[-1].error.startswith("truncated record: file ends inside <record>")


def test_xml_spanning_many_blocks_reports_file_lines(tmp_path, raw_bibs):
    """A ~1 MB collection (several read blocks): errors point at the right line of the file."""
    recs = [pymarc.Record(c) for c in raw_bibs[:250]]
    lines = [pymarc.record_to_xml(r) for r in recs]
    lines[230] = lines[230].replace(b"<subfield", b"<subfield <", 1)
    data = b'<?xml version="1.0" encoding="UTF-8"?>\n<collection xmlns="' + SLIM.encode() + b'">\n'
    data += b"\n".join(lines) + b"\n</collection>\n"
    assert len(data) > 1_000_000
    items = list(iter_marc(_write(tmp_path / "many.xml", data)))
    _reconciles(items)
    assert len(items) == 250 and [i.index for i in items if not i.ok] == [231]
    assert items[230].error == "malformed XML: not well-formed (invalid token) at line 233 (record starting at line 233)"
    assert items[230].identifier == _id_of(recs[230])
    assert [_fields(i.record) for i in items if i.ok] == [_fields(r) for k, r in enumerate(recs) if k != 230]

    # cut inside the start tag of the last record: still one item for it
    cut = data[: data.rindex(b"<record") + 7]
    items = list(iter_marc(_write(tmp_path / "cut.xml", cut)))
    assert len(items) == 250 and items[-1].error == "truncated record: file ends inside <record> starting at line 252"


def test_empty_collection_and_non_marc_xml(tmp_path):
    empty = _write(tmp_path / "empty.xml", b'<collection xmlns="' + SLIM.encode() + b'"/>')
    items = list(iter_marc(empty))
    assert len(items) == 1 and items[0].error == "no records found (MARCXML file without records)"
    html = _write(tmp_path / "page.xml", b"<!DOCTYPE html>\n<html><body>hi</body></html>")
    assert detect_format(html) == "unknown"
    [item] = iter_marc(html)
    assert item.error == "not a MARC file (XML document with root element <html>)"


# ----------------------------------------------------------------------------- encodings


def test_marc8_record_is_converted_to_unicode(tmp_path, raw_bibs):
    base = pymarc.Record(_ascii_record_with_001(raw_bibs))
    base.add_field(pymarc.Field("500", pymarc.Indicators(" ", " "), [pymarc.Subfield("a", "XXXXXXXX")]))
    data = base.as_marc()
    data = data[:9] + b" " + data[10:]  # leader/09 blank: MARC-8
    data = data.replace(b"XXXXXXXX", b"M\xe8archen")  # MARC-8 combining umlaut before its base letter
    path = _write(tmp_path / "marc8.mrc", data)
    [item] = iter_marc(path)
    assert item.ok, item.error
    value = item.record.get_fields("500")[-1].get_subfields("a")[0]
    assert unicodedata.normalize("NFC", value) == "M\u00e4rchen"
    assert value == "M\u00e4rchen"  # pymarc's MARC-8 decoder composes (NFC)
    assert item.identifier == _id_of(base)


def test_utf8_mislabelled_as_marc8_is_read_as_utf8(tmp_path, raw_bibs):
    chunk = next(c for c in raw_bibs if not c.isascii() and b"\xc3\xa4" in c)  # contains UTF-8 "ä"
    data = chunk[:9] + b" " + chunk[10:]
    [item] = iter_marc(_write(tmp_path / "mislabelled.mrc", data))
    assert item.ok
    assert "\u00e4" in str(item.record)
    assert _fields(item.record) == _fields(pymarc.Record(chunk))


def test_invalid_utf8_is_rejected_or_replaced(tmp_path, raw_bibs):
    chunk = _ascii_record_with_001(raw_bibs)
    rec = pymarc.Record(chunk)
    title = rec.get_fields("245")[0].get_subfields("a")[0].encode()
    bad = chunk.replace(title, b"\xff" + title[1:], 1)
    path = _write(tmp_path / "bad-utf8.mrc", raw_bibs[0] + bad + raw_bibs[1])
    items = list(iter_marc(path))
    _reconciles(items)
    assert [i.ok for i in items] == [True, False, True]
    assert items[1].error.startswith("invalid UTF-8 in field 245: byte(s) ff at record offset ")
    assert items[1].identifier == _id_of(rec)

    items = list(iter_marc(path, utf8_errors="replace"))
    assert all(i.ok for i in items)
    assert items[1].record.get_fields("245")[0].get_subfields("a")[0].startswith("\ufffd")


# ----------------------------------------------------------------------------- damaged binary files


def test_truncated_final_record(tmp_path, raw_bibs):
    k = next(k for k in range(9, 4909) if pymarc.Record(raw_bibs[k]).get_fields("001"))  # last one has a 001
    last = raw_bibs[k]
    path = _write(tmp_path / "truncated.mrc", b"".join(raw_bibs[:k]) + last[: len(last) // 2])
    items = list(iter_marc([path]))
    _reconciles(items)
    assert len(items) == k + 1 and sum(i.ok for i in items) == k
    assert items[-1].error.startswith("truncated record: file ends after ")
    assert items[-1].identifier == _id_of(pymarc.Record(last))


def test_corrupted_leader(tmp_path, raw_bibs):
    victim = _ascii_record_with_001(raw_bibs)
    broken = b"ABCDE" + victim[5:]
    path = _write(tmp_path / "leader.mrc", b"".join(raw_bibs[:2]) + broken + b"".join(raw_bibs[2:4]))
    items = list(iter_marc(path))
    _reconciles(items)
    assert [i.ok for i in items] == [True, True, False, True, True]
    assert items[2].error == "bad leader: record length 'ABCDE' is not a number"
    assert items[2].identifier == _id_of(pymarc.Record(victim))

    # a file whose only record has a broken leader is still recognised as MARC
    alone = _write(tmp_path / "alone.mrc", broken)
    assert detect_format(alone) == "marc21"
    [item] = iter_marc(alone)
    assert item.error.startswith("bad leader")


def test_wrong_record_length_in_leader(tmp_path, raw_bibs):
    victim = raw_bibs[2]
    wrong = b"%05d" % (len(victim) + 7) + victim[5:]
    path = _write(tmp_path / "length.mrc", b"".join(raw_bibs[:2]) + wrong + b"".join(raw_bibs[3:5]))
    items = list(iter_marc(path))
    _reconciles(items)
    assert [i.ok for i in items] == [True, True, False, True, True]
    assert items[2].error == f"record length mismatch: leader says {len(victim) + 7} bytes, record has {len(victim)}"
    assert items[2].identifier == _id_of(pymarc.Record(victim))


def test_directory_errors(tmp_path, raw_bibs):
    victim = raw_bibs[5]
    # first directory entry: offset pushed past the end of the record
    bad_offset = victim[:31] + b"99999" + victim[36:]
    # first directory entry: length field not numeric
    bad_entry = victim[:27] + b"00x9" + victim[31:]
    path = _write(tmp_path / "dir.mrc", raw_bibs[0] + bad_offset + bad_entry + raw_bibs[1])
    items = list(iter_marc(path))
    _reconciles(items)
    assert [i.ok for i in items] == [True, False, False, True]
    assert items[1].error.startswith("directory error: field ") and "extends beyond the end" in items[1].error
    assert items[2].error.startswith("directory error: entry 1 ")


def test_gzip_inputs(tmp_path, raw_bibs):
    data = b"".join(raw_bibs[:200])
    gz = _write(tmp_path / "bibs.bin", gzip.compress(data))  # no .gz suffix: sniffed by magic bytes
    assert detect_format(gz) == "marc21"
    items = list(iter_marc(gz))
    assert len(items) == 200 and all(i.ok for i in items)

    cut = gzip.compress(data)
    items = list(iter_marc(_write(tmp_path / "cut.mrc.gz", cut[: len(cut) // 2])))
    _reconciles(items)
    assert all(i.ok for i in items[:-1]) and not items[-1].ok
    assert items[-1].error.startswith("truncated record: compressed stream is truncated")

    xml_gz = _write(tmp_path / "x.xml.gz", gzip.compress(_xml_collection([pymarc.Record(c) for c in raw_bibs[:3]])))
    assert detect_format(xml_gz) == "marcxml"
    assert sum(i.ok for i in iter_marc(xml_gz)) == 3


# ----------------------------------------------------------------------------- not MARC at all


def test_non_marc_files_yield_one_item(tmp_path):
    pdf = _write(tmp_path / "scan.mrc", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + bytes(range(256)) * 4)
    text = _write(tmp_path / "notes.mrc", b"Title: something\nAuthor: someone\n")
    json_file = CONFORMANCE / "cornell-instances.json"
    for path, what in ((pdf, "PDF document"), (text, "text starting 'Title: something'"), (json_file, "JSON or other text")):
        assert detect_format(path) == "unknown"
        items = list(iter_marc([path]))
        assert len(items) == 1
        assert items[0].record is None and items[0].error == f"not a MARC file ({what})"


def test_empty_file(tmp_path):
    empty = _write(tmp_path / "empty.mrc", b"")
    assert detect_format(empty) == "empty"
    [item] = iter_marc([empty])
    assert (item.record, item.error, item.index, item.position) == (None, "empty file", 1, 1)


def test_unopenable_paths_raise_before_reading(tmp_path):
    missing = tmp_path / "nope.mrc"
    with pytest.raises(MarcReadError, match="nope.mrc"):
        iter_marc([BIBS, missing])  # checked up front, nothing is yielded first
    with pytest.raises(MarcReadError, match="is a directory"):
        list(iter_marc([tmp_path]))
    with pytest.raises(MarcReadError, match="nope.mrc"):
        detect_format(missing)
    assert issubclass(MarcReadError, ValueError)


def test_mixed_inputs_reconcile(tmp_path, raw_bibs):
    paths = [
        _write(tmp_path / "ok.mrc", b"".join(raw_bibs[:20])),
        _write(tmp_path / "empty.mrc", b""),
        _write(tmp_path / "trunc.mrc", b"".join(raw_bibs[20:25]) + raw_bibs[25][:100]),
        _write(tmp_path / "junk.txt", b"hello\n"),
        CORNELL,
    ]
    items = list(iter_marc(paths))
    _reconciles(items)
    per_file = {str(p): [i for i in items if i.source == str(p)] for p in paths}
    assert [len(v) for v in per_file.values()] == [20, 1, 6, 1, 20]
    assert sum(i.ok for i in items) == 20 + 5 + 20
    for v in per_file.values():
        assert [i.index for i in v] == list(range(1, len(v) + 1))


# ----------------------------------------------------------------------------- streaming


_RSS_SCRIPT = """
import resource, sys
from folio_llm.marc.reader import iter_marc
n = sum(1 for item in iter_marc(sys.argv[1:]) if item.ok)
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def _peak_rss(path: Path) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path)], check=True, capture_output=True, text=True)
    n, rss = out.stdout.split()
    return int(n), int(rss)


def test_memory_stays_flat_while_streaming(tmp_path, raw_bibs):
    """Peak RSS does not grow with the file: 4x the records, same memory (within noise)."""
    big = tmp_path / "big.mrc"
    data = BIBS.read_bytes()
    big.write_bytes(data * 4)
    xml_body = b"\n".join(pymarc.record_to_xml(pymarc.Record(c)) for c in raw_bibs[:1000])
    small_xml = _write(tmp_path / "small.xml", b"<collection>" + xml_body + b"</collection>")
    big_xml = _write(tmp_path / "big.xml", b"<collection>" + xml_body * 4 + b"</collection>")
    for small, large, n in ((BIBS, big, 4909), (small_xml, big_xml, 1000)):
        n_small, rss_small = _peak_rss(small)
        n_large, rss_large = _peak_rss(large)
        assert (n_small, n_large) == (n, 4 * n)
        grown = rss_large - rss_small
        added = large.stat().st_size - small.stat().st_size
        assert grown < 4_000_000, f"{large.name}: peak RSS grew by {grown} bytes for {added} more bytes of input"
