"""The relaxed element fragment grammar (EXI 1.0 section 8.5.3) against EXIficient: byte for byte.

-2 ``eMAID`` with EXIficient's precompiled V2G grammars (Josev's jar, fragment mode), and every
relaxed element of a schema of our own with grammars EXIficient builds from the same XSD at run time.
Both directions: our bytes equal EXIficient's for the same XML, EXIficient decodes our bytes to that
XML, and we decode EXIficient's bytes (including its string-table hits) to the same value.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import exi
from exi.model.iso2_msgdatatypes import EMAIDType
from tests.test_exi_relaxed_fragments import (
    BODY,
    EMAID_PLAIN,
    EMAID_WITH_ID,
    ISSUE60_CONFORMANT,
    SCHEMA_BYTES,
    SCHEMA_XSD,
    TEST_LABEL,
    TEST_NS,
    TYPES,
    schema_codec,
    schema_values,
)

ISO2 = "iso2-fragment"
EMAIDS = [
    (EMAIDType(Id="id4", value="DEEDGC000000011"), EMAID_WITH_ID),
    ("DEEDGC000000011", EMAID_PLAIN),
    (EMAIDType(Id="id4", value="DEABCC123ABC56"), ISSUE60_CONFORMANT),
    (EMAIDType(Id="emaid-" + "7" * 150, value="NLABC1234567890"), None),  # long Id: 2-octet length
    (EMAIDType(Id="x", value="DEEDGC00000001é"), None),  # a non-ASCII character
    ("DE8AA00000000Y", None),
]


@pytest.mark.parametrize(("value", "expected"), EMAIDS)
def test_emaid_bytes_equal_exificient(exificient, value: Any, expected: str | None) -> None:
    frag = exi.Fragment(BODY, "eMAID", value)
    ours = exi.encode("iso2", frag, fragment=True)
    xml = exi.to_xml(frag, "iso2", pretty=False)
    for mode in ("default", "josev"):
        assert exificient.encode(ISO2, xml, mode=mode) == ours, mode
    if expected is not None:
        assert ours.hex() == expected
    assert exi.from_xml("iso2", exificient.decode(ISO2, ours), fragment=True) == frag


def test_emaid_exificient_table_hits_decode_here(exificient) -> None:
    """With default options EXIficient writes the text as a hit when it repeats the Id."""
    xml = f'<eMAID xmlns="{BODY}" xmlns:t="{TYPES}" t:Id="DEEDGC000000011">DEEDGC000000011</eMAID>'
    theirs = exificient.encode(ISO2, xml)
    expected = EMAIDType(Id="DEEDGC000000011", value="DEEDGC000000011")
    assert exi.decode("iso2", theirs, fragment=True).value == expected
    assert theirs != exi.encode("iso2", exi.Fragment(BODY, "eMAID", expected), fragment=True)  # we write literals


def test_emaid_unqualified_id_is_another_attribute(exificient) -> None:
    """``Id`` without namespace is A_2 (xmldsig's), not EMAIDType's {MsgDataTypes}Id (A_4): EXIficient
    takes it (any declared attribute may appear in the relaxed grammar); we decode it as no -2 type."""
    theirs = exificient.encode(ISO2, f'<eMAID xmlns="{BODY}" Id="id4">DEEDGC000000011</eMAID>')
    assert theirs != bytes.fromhex(EMAID_WITH_ID)
    with pytest.raises(exi.DecodeError, match="no attribute Id"):
        exi.decode("iso2", theirs, fragment=True)


@pytest.fixture(scope="module")
def relaxed_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ModuleType]]:
    xsd = tmp_path_factory.mktemp("relaxed-interop") / "relaxed.xsd"
    xsd.write_text(SCHEMA_XSD)
    with schema_codec(xsd) as model:
        yield xsd, model


def test_schema_bytes_equal_exificient(exificient, relaxed_schema: tuple[Path, ModuleType]) -> None:
    xsd, model = relaxed_schema
    proto = f"xsd-fragment:{xsd}"
    for (name, value), expected in zip(schema_values(model), SCHEMA_BYTES, strict=True):
        frag = exi.Fragment(TEST_NS, name, value)
        ours = exi.encode(TEST_LABEL, frag, fragment=True)
        assert ours.hex() == expected, name
        xml = exi.to_xml(frag, TEST_LABEL, pretty=False)
        assert exificient.encode(proto, xml) == ours, (name, xml)
        back = exi.from_xml(TEST_LABEL, exificient.decode(proto, ours), fragment=True)
        assert back == frag or (name, value, back.value) == ("item", "5", 5), name


def test_schema_exificient_table_hits_decode_here(exificient, relaxed_schema: tuple[Path, ModuleType]) -> None:
    xsd, model = relaxed_schema
    pair = model.PairType(item=[3, 3, 3], code=3, flag=True)  # "3" repeats: local and global hits
    frag = exi.Fragment(TEST_NS, "entry", pair)
    theirs = exificient.encode(f"xsd-fragment:{xsd}", exi.to_xml(frag, TEST_LABEL, pretty=False))
    assert theirs != exi.encode(TEST_LABEL, frag, fragment=True)
    assert exi.decode(TEST_LABEL, theirs, fragment=True) == frag
