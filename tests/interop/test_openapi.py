"""Discoverable conformance (web/openapi.py): /openapi.json and PS3.18 Retrieve Capabilities (WADL).

The route list is walked here independently of web/openapi.py and compared with the document,
so a route the generator misses, or a new route with neither a docstring nor a PS3.18
transaction behind it, fails here.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Host, Mount, Route

from pergamon.web import openapi
from pergamon.web.openapi import WADL_MEDIA_TYPE, WADL_NS, build_openapi, parse_doc, transaction

W = f"{{{WADL_NS}}}"


def base_url(app: Any) -> str:
    return f"http://127.0.0.1:{app.settings.http.port}"


def the_app(server: Any) -> Starlette:
    """The Starlette app the live server runs."""
    app = server.http.server.config.app
    assert isinstance(app, Starlette)
    return app


def leaves(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Route]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from leaves(list(route.routes), prefix + route.path)
        elif isinstance(route, Host):
            yield from leaves(list(route.routes), prefix)
        else:
            assert isinstance(route, Route), f"a kind of route the test does not know: {route!r}"
            yield prefix + route.path_format, route


def app_operations(app: Starlette) -> set[tuple[str, str]]:
    """(path, method) of every route of the app, HEAD left out (Starlette adds it to every GET)."""
    found = set()
    for path, route in leaves(list(app.routes)):
        for method in route.methods or {"GET"}:
            if method != "HEAD":
                found.add((path, method.lower()))
    return found


def dicomweb_routes(server: Any) -> list[tuple[str, Route]]:
    base = server.settings.http.base_path.rstrip("/")
    return [(p, r) for p, r in leaves(list(the_app(server).routes)) if p.startswith(base + "/") and p != base + "/"]


@pytest.fixture
def document(server: Any) -> dict[str, Any]:
    response = httpx.get(f"{base_url(server)}/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return dict(response.json())


# -- OpenAPI -------------------------------------------------------------------------------------


def test_openapi_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    assert document["openapi"].startswith("3.1.")
    validator.validate(document)


def test_openapi_lists_every_route_of_the_app(server: Any, document: dict[str, Any]) -> None:
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert described == app_operations(the_app(server))
    assert ("/openapi.json", "get") in described
    assert ("/health", "get") in described


def test_every_operation_is_documented(document: dict[str, Any]) -> None:
    """A summary from the endpoint's docstring or its PS3.18 transaction; unique operation ids."""
    ids = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation.get("summary"), f"{method.upper()} {path}: no docstring and no PS3.18 transaction"
            assert "200" in operation["responses"], f"{method.upper()} {path}"
            ids.append(operation["operationId"])
    assert len(ids) == len(set(ids))


def test_openapi_describes_the_dicomweb_routes(server: Any, document: dict[str, Any]) -> None:
    """Path parameters from the route; media types and query parameters of their PS3.18 transaction."""
    routes = dicomweb_routes(server)
    if not routes:
        pytest.skip("DICOMweb services not implemented yet (no routes under the base path)")
    for path, route in routes:
        for method in (route.methods or {"GET"}) - {"HEAD"}:
            operation = document["paths"][path][method.lower()]
            in_path = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert in_path == set(route.param_convertors), f"{method} {path}"
            name = operation.get("x-dicom-transaction", "")
            if name.startswith("SearchFor"):
                assert "application/dicom+json" in operation["responses"]["200"]["content"]
                query = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
                assert {"includefield", "limit", "offset", "fuzzymatching"} <= query, path
            if name in ("RetrieveStudy", "RetrieveSeries", "RetrieveInstance"):
                assert 'multipart/related; type="application/dicom"' in operation["responses"]["200"]["content"]


def test_openapi_is_generated_from_the_routes_given() -> None:
    """Undocumented routes are listed without a summary (the check above fails on them); Mounts nest."""

    async def documented(request: Any) -> PlainTextResponse:
        """Say hello.

        Longer text.

        Query parameters:
            name: who to greet
        Media types: text/plain
        """
        return PlainTextResponse("hello")

    async def undocumented(request: Any) -> PlainTextResponse:
        return PlainTextResponse("")

    routes: list[BaseRoute] = [
        Route("/hello", documented),
        Mount("/dicom-web", routes=[Route("/studies/{study}/novel", undocumented, methods=["GET", "PUT"])]),
    ]
    document = build_openapi(routes, "/dicom-web")
    hello = document["paths"]["/hello"]["get"]
    assert hello["summary"] == "Say hello."
    assert [p["name"] for p in hello["parameters"]] == ["name"]
    assert list(hello["responses"]["200"]["content"]) == ["text/plain"]
    novel = document["paths"]["/dicom-web/studies/{study}/novel"]
    assert set(novel) == {"get", "put"}
    assert "summary" not in novel["get"]
    assert novel["get"]["parameters"] == [
        {"name": "study", "in": "path", "required": True, "schema": {"type": "string"}}
    ]


@pytest.mark.parametrize(
    ("method", "relative", "name"),
    [
        ("GET", "/studies", "SearchForStudies"),
        ("GET", "/studies/{study}/series", "SearchForSeries"),
        ("GET", "/studies/{study}/series/{series}/instances", "SearchForInstances"),
        ("GET", "/instances", "SearchForInstances"),
        ("GET", "/studies/{study}", "RetrieveStudy"),
        ("GET", "/studies/{study}/series/{series}", "RetrieveSeries"),
        ("GET", "/studies/{study}/series/{series}/instances/{instance}", "RetrieveInstance"),
        ("GET", "/studies/{study}/metadata", "RetrieveStudyMetadata"),
        ("GET", "/studies/{study}/series/{series}/instances/{instance}/metadata", "RetrieveInstanceMetadata"),
        ("GET", "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", "RetrieveFrames"),
        ("GET", "/studies/{study}/series/{series}/rendered", "RetrieveSeriesRendered"),
        ("GET", "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
         "RetrieveFramesRendered"),
        ("GET", "/studies/{study}/thumbnail", "RetrieveStudyThumbnail"),
        ("POST", "/studies", "StoreInstances"),
        ("POST", "/studies/{study}", "StoreStudyInstances"),
        ("OPTIONS", "/", "RetrieveCapabilities"),
        ("GET", "/", "RetrieveWADOURI"),
    ],
)  # fmt: skip
def test_ps3_18_transaction_names(method: str, relative: str, name: str) -> None:
    found = transaction(method, relative, "/dicom-web" + relative)
    assert found is not None
    assert found.name == name


def test_parse_doc_sections() -> None:
    summary, description, query, media = parse_doc(
        "Search.\n\nQuery parameters:\n    limit: at most\n    `offset`: skip\nMedia types: a/b, c/d\n"
    )
    assert (summary, query, media) == ("Search.", {"limit": "at most", "offset": "skip"}, ("a/b", "c/d"))
    assert description.startswith("Query parameters:")


# -- Retrieve Capabilities (PS3.18 8.9, Annex H) --------------------------------------------------


def wadl(server: Any, path: str = "", accept: str | None = WADL_MEDIA_TYPE) -> httpx.Response:
    headers = {"Accept": accept} if accept else {}
    return httpx.request("OPTIONS", f"{base_url(server)}{server.settings.http.base_path}{path}", headers=headers)


def resource_paths(element: ET.Element, prefix: str = "") -> Iterator[tuple[str, ET.Element]]:
    for resource in element.findall(f"{W}resource"):
        path = f"{prefix}/{resource.get('path', '').strip('/')}".replace("//", "/")
        yield path, resource
        yield from resource_paths(resource, path)


@pytest.mark.parametrize("path", ["", "/"])
def test_capabilities_are_a_wadl_document(server: Any, path: str) -> None:
    response = wadl(server, path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(WADL_MEDIA_TYPE)
    root = ET.fromstring(response.content)
    assert root.tag == f"{W}application"
    resources = root.findall(f"{W}resources")
    assert len(resources) == 1
    assert resources[0].get("base") == f"{base_url(server)}{server.settings.http.base_path}/"
    methods = {m.get("id") for m in root.iter(f"{W}method")}
    assert "RetrieveCapabilities" in methods


def test_capabilities_name_every_dicomweb_resource(server: Any) -> None:
    root = ET.fromstring(wadl(server).content)
    found = {path: resource for path, resource in resource_paths(root.find(f"{W}resources"))}  # type: ignore[arg-type]
    base = server.settings.http.base_path.rstrip("/")
    for path, route in dicomweb_routes(server):
        relative = path[len(base) :].rstrip("/")
        assert relative in found, f"{relative} missing from the WADL"
        declared = {m.get("name") for m in found[relative].findall(f"{W}method")}
        assert declared >= (route.methods or {"GET"}) - {"HEAD"}, relative
    names = {m.get("id") for m in root.iter(f"{W}method")}
    if any(p.endswith("/studies") for p, _ in dicomweb_routes(server)):
        assert "SearchForStudies" in names
        search = next(m for m in root.iter(f"{W}method") if m.get("id") == "SearchForStudies")
        assert {r.get("mediaType") for r in search.iter(f"{W}representation")} >= {"application/dicom+json"}
        assert {p.get("name") for p in search.iter(f"{W}param")} >= {"limit", "offset", "includefield"}


def test_capabilities_media_type_negotiation(server: Any) -> None:
    assert wadl(server, accept=None).headers["content-type"].startswith(WADL_MEDIA_TYPE)
    assert wadl(server, accept="*/*").status_code == 200
    assert wadl(server, accept="application/xml").headers["content-type"].startswith("application/xml")
    refused = wadl(server, accept="application/dicom+json")
    assert refused.status_code == 406
    assert WADL_MEDIA_TYPE in refused.text


def test_capabilities_route_answers_options_only(server: Any) -> None:
    """GET on the base path goes on to WADO-URI; the OPTIONS-only route does not answer 405 for it."""
    response = httpx.get(f"{base_url(server)}{server.settings.http.base_path}", follow_redirects=False)
    assert response.status_code != 405 or "GET" in response.headers.get("allow", ""), response.headers


def test_openapi_routes_come_with_the_app(server: Any) -> None:
    paths = {p for p, _ in leaves(list(the_app(server).routes))}
    assert "/openapi.json" in paths
    assert openapi.WADL_MEDIA_TYPE == "application/vnd.sun.wadl+xml"


# -- the description against the live server (schemathesis, optional) -----------------------------


def test_get_routes_answer_no_5xx_to_generated_requests(server: Any, tmp_path: Any) -> None:
    """Requests generated from /openapi.json for every GET operation: never a server error."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from pydicom.data import get_testdata_file

    from pergamon.archive.origin import Origin

    source = tmp_path / "ct.dcm"
    source.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    server.archive.store_file(source, Origin.from_import(str(source)))
    schema = schemathesis.openapi.from_url(f"{base_url(server)}/openapi.json")
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "GET":
            continue

        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(base_url=base_url(server), timeout=30)
            if response.status_code >= 500:
                failures.append(f"GET {case.formatted_path} {case.query}: {response.status_code} {response.text[:200]}")

        check()
    assert failures == []
