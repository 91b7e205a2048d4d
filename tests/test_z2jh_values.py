"""The course's Zero-to-JupyterHub values (deploy/z2jh/) validate against the chart's own schema.

The schema is the chart's ``values.schema.yaml``, vendored unchanged in deploy/z2jh/ (source,
commit, license and hash in deploy/z2jh/README.md). Helm validates the values it renders with,
which are the chart's defaults merged with ours; the defaults supply the keys the schema
requires at the top (``hub``, ``proxy``, ...), so ours are checked with every ``required``
dropped and every other rule kept: an unknown key anywhere (``additionalProperties: false``), a
wrong type or a value outside an enum still fails. Nothing here deploys: there is no cluster on
this machine (docs/kubernetes.md says so).
"""

import copy
import hashlib
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
Z2JH = REPO / "deploy" / "z2jh"
SCHEMA = Z2JH / "values.schema.yaml"
SHARED = REPO.parent / "shared" / "vendor" / "z2jh"
SCHEMA_SHA256 = "2cedc7a009d6472ee97cff7d2aeeac3c323ac523c0535f1b4d16ca4d6b6acd1f"
VALUES = sorted(p for p in Z2JH.glob("values*.yaml") if p.name != SCHEMA.name)


def _without_required(node):
    """The schema with every ``required`` list removed (Helm checks the merged values)."""
    if isinstance(node, dict):
        return {k: _without_required(v) for k, v in node.items()
                if not (k == "required" and isinstance(v, list))}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


@pytest.fixture(scope="module")
def validator():
    schema = _without_required(yaml.safe_load(SCHEMA.read_text()))
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft7Validator, "the chart's schema declares draft-07"
    cls.check_schema(schema)
    return cls(schema)


def _errors(validator, values):
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in validator.iter_errors(values)]


def test_the_values_files_are_there():
    names = {p.name for p in VALUES}
    assert {"values.yaml", "values-sysbox.yaml", "values-userns.yaml",
            "values-privileged.yaml"} <= names


@pytest.mark.parametrize("path", VALUES, ids=lambda p: p.name)
def test_values_validate_against_the_chart_schema(validator, path):
    values = yaml.safe_load(path.read_text())
    assert isinstance(values, dict) and values, f"{path.name} is empty"
    assert _errors(validator, values) == []


def test_each_runtime_option_validates_merged_with_the_course_values(validator):
    base = yaml.safe_load((Z2JH / "values.yaml").read_text())
    for name in ("values-sysbox.yaml", "values-userns.yaml", "values-privileged.yaml"):
        merged = _merge(copy.deepcopy(base), yaml.safe_load((Z2JH / name).read_text()))
        assert _errors(validator, merged) == [], name


def _merge(into, over):
    """Helm's merge of two values files: maps merge key by key, anything else replaces."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def test_the_course_values_say_what_the_course_needs():
    values = yaml.safe_load((Z2JH / "values.yaml").read_text())
    single = values["singleuser"]
    assert single["defaultUrl"] == "/lab"
    assert single["cpu"]["limit"] >= single["cpu"]["guarantee"] > 0
    assert single["memory"]["guarantee"] and single["memory"]["limit"]
    assert values["prePuller"]["hook"]["enabled"] and values["prePuller"]["continuous"]["enabled"]
    assert values["cull"]["enabled"]
    assert single["networkPolicy"]["enabled"]
    assert single["networkPolicy"]["egressAllowRules"]["cloudMetadataServer"] is False
    assert single["extraEnv"]["EDU_STATE_DIR"].startswith("/var/lib/edu-store/")
    sysbox = yaml.safe_load((Z2JH / "values-sysbox.yaml").read_text())
    assert sysbox["singleuser"]["extraPodConfig"]["runtimeClassName"] == "sysbox-runc"
    userns = yaml.safe_load((Z2JH / "values-userns.yaml").read_text())
    assert userns["singleuser"]["extraPodConfig"]["hostUsers"] is False


def test_a_wrong_key_is_rejected_naming_its_path(validator):
    values = yaml.safe_load((Z2JH / "values.yaml").read_text())
    values["singleuser"]["cpu"]["limt"] = 2
    errors = _errors(validator, values)
    assert len(errors) == 1, errors
    assert errors[0].startswith("singleuser.cpu: ")
    assert "'limt' was unexpected" in errors[0]


def test_a_wrong_type_is_rejected_naming_its_path(validator):
    values = yaml.safe_load((Z2JH / "values.yaml").read_text())
    values["prePuller"]["hook"]["enabled"] = "yes"
    assert _errors(validator, values) == ["prePuller.hook.enabled: 'yes' is not of type 'boolean'"]


def test_the_vendored_schema_is_the_charts_unchanged():
    data = SCHEMA.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SCHEMA_SHA256
    assert SCHEMA_SHA256 in (Z2JH / "README.md").read_text()
    assert "BSD 3-Clause" in (Z2JH / "LICENSE").read_text()
    if SHARED.is_dir():   # the project's shared vendor copy, where this checkout has one
        assert data == (SHARED / "values.schema.yaml").read_bytes()
        assert (Z2JH / "LICENSE").read_bytes() == (SHARED / "LICENSE").read_bytes()
