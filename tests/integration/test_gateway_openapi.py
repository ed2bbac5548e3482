"""docs/openapi.yaml against the gateway's route table (issue 6).

The route list comes from gateway/routes.c itself (the rows of routes_table:
.path and .methods), not from the running gateway: a gateway that listed its
routes in the document it serves would make the check circular. The served
/openapi.yaml must be byte-identical to docs/openapi.yaml (built in), and its
(path, method) pairs exactly the table's, HEAD being implied by GET.
Run: MAGNETAR_BUILD=$PWD/build /usr/bin/python3 -m pytest -q tests/integration/test_gateway_openapi.py
"""

import re

import pytest
import requests
import yaml

from test_gateway_http import REPO, Gateway, check_security_headers

METHOD_BITS = {"HTTP_M_GET": "get", "HTTP_M_HEAD": "head", "HTTP_M_POST": "post",
               "HTTP_M_PUT": "put", "HTTP_M_PATCH": "patch", "HTTP_M_DELETE": "delete",
               "HTTP_M_OPTIONS": "options"}


def table_routes():
    src = (REPO / "gateway" / "routes.c").read_text()
    table = re.search(r"routes_table\[\]\s*=\s*\{(.*?)\n\};", src, re.S).group(1)
    pairs = set()
    for row in re.split(r"\{\s*\.path", table)[1:]:
        path = re.match(r'\s*=\s*"([^"]+)"', row).group(1)
        methods = re.search(r"\.methods\s*=\s*([A-Z_ |]+)", row).group(1)
        for bit in (m.strip() for m in methods.split("|")):
            pairs.add((path, METHOD_BITS[bit]))
    assert len(pairs) >= 20, pairs
    return pairs


def doc_routes(doc):
    verbs = set(METHOD_BITS.values())
    return {(p, m) for p, item in doc["paths"].items() for m in item if m in verbs}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("openapi"))
    r = requests.get(g.base + "/openapi.yaml", timeout=5)
    g.stop()
    return r


def test_served_is_the_file(served):
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("application/yaml")
    check_security_headers(served.headers)
    assert served.content == (REPO / "docs" / "openapi.yaml").read_bytes()


def test_every_route_is_documented_and_vice_versa(served):
    doc = yaml.safe_load(served.text)
    assert doc["openapi"].startswith("3.1")
    table, documented = table_routes(), doc_routes(doc)
    assert table - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - table == set(), "documented routes the gateway does not have"


def test_operations_are_complete(served):
    doc = yaml.safe_load(served.text)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op.get("responses"), (path, method)
            for code, resp in op["responses"].items():
                assert "$ref" in resp or resp.get("description"), (path, method, code)
            if "{id}" in path:
                names = [p.get("name") for p in op.get("parameters", [])]
                assert "id" in names, (path, method)
    # Every $ref resolves.
    text = served.text
    for ref in set(re.findall(r"\$ref: '?#/components/(\w+)/(\w+)", text)):
        assert ref[1] in doc["components"][ref[0]], ref
