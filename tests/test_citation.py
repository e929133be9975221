"""CITATION.cff is valid Citation File Format 1.2.0 (the vendored schema, offline) and cites
this software plus, as a reference, the paper it reproduces; LICENSE is the MIT text."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

SCHEMA = REPO / "tests" / "fixtures" / "cff" / "schema-1.2.0.json"


class _CffLoader(yaml.SafeLoader):
    """YAML as the CFF validator reads it: dates stay strings (the schema types them as
    strings with a pattern; PyYAML would make them datetime.date)."""


_CffLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _validate(cff: dict) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(cff)


def _citation() -> dict:
    return yaml.load((REPO / "CITATION.cff").read_text(encoding="utf-8"), Loader=_CffLoader)


def test_citation_cff_is_valid_cff_1_2_0():
    _validate(_citation())


def test_citation_cites_the_software_and_the_paper():
    cff = _citation()
    assert cff["type"] == "software" and cff["license"] == "MIT"
    (paper,) = cff["references"]
    assert paper["title"] == "Multi-Token Prediction via Self-Distillation" and paper["year"] == 2026
    assert [a["family-names"] for a in paper["authors"]] == [
        "Kirchenbauer", "Hans", "Bartoldson", "Goldblum", "Panda", "Goldstein"]
    assert {"type": "other", "value": "arXiv:2602.06019", "description": "arXiv identifier"} in paper["identifiers"]
    assert "preferred-citation" not in cff, "GitHub would then show the paper instead of this software"


@pytest.mark.parametrize("breakage", [
    lambda c: c.pop("authors"),
    lambda c: c.update({"cff-version": "1.2"}),
    lambda c: c["references"][0].update({"type": "preprint-ish"}),
    lambda c: c.update({"date-released": "2026-13-01"}),
])
def test_the_schema_rejects_a_broken_citation(breakage):
    cff = _citation()
    breakage(cff)
    with pytest.raises(jsonschema.ValidationError):
        _validate(cff)


def test_license_is_the_mit_text_with_the_project_copyright_line():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the mtpsd authors\n")
    assert "Permission is hereby granted, free of charge" in text
