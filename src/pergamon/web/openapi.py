"""Discoverable conformance: `GET /openapi.json` (OpenAPI 3.1) and PS3.18 Retrieve Capabilities (WADL).

Both are generated from the routes the running app actually has (`request.app.routes`, walked
recursively through every Mount), at the first request, and cached on the app: a route added to
any service module is described without touching this file.

What an operation says comes from its endpoint's docstring, completed by what PS3.18 fixes for
the resource (transaction name, media types, query parameters):

- summary: the PS3.18 transaction name where there is one (Search for Studies, Retrieve Study
  Metadata, ...), else the docstring's first line; description: the docstring;
- path parameters: from the route's path (`{study}`, with its convertor's type);
- query parameters: the PS3.18 ones for the transaction (`QUERY_PARAMETERS`), or those the
  docstring lists in a section `Query parameters:` with one `name: what it does` line each;
- response media types: PS3.18's for the transaction (`MEDIA_TYPES`), or those the docstring
  lists after `Media types:` (comma-separated).

Retrieve Capabilities (PS3.18 §8.9, Annex H): `OPTIONS {base_path}` (with or without the final
slash) answers a WADL document (`application/vnd.sun.wadl+xml`) whose `resources` base is the
service root and whose resource tree has every DICOMweb route with its methods, named by their
PS3.18 transaction (`SearchForStudies`, `RetrieveStudy`, ...), their query parameters and
response representations. The route only ever matches OPTIONS, so it never hides the WADO-URI
GET on the same path.
"""

from __future__ import annotations

import inspect
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from starlette.convertors import FloatConvertor, IntegerConvertor, UUIDConvertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Host, Match, Mount, Route, WebSocketRoute
from starlette.types import Scope

from pergamon.archive.service import Archive

OPENAPI_VERSION = "3.1.0"
WADL_MEDIA_TYPE = "application/vnd.sun.wadl+xml"
WADL_NS = "http://wadl.dev.java.net/2009/02"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
MULTIPART_OCTETS = 'multipart/related; type="application/octet-stream"'
MULTIPART_XML = 'multipart/related; type="application/dicom+xml"'

# -- what PS3.18 fixes for each kind of transaction -------------------------------------------------

_QIDO = {
    "{attributeID}": "match on an attribute, by keyword or tag (e.g. PatientID=123, 00100020=123)",
    "includefield": "attributes to return besides the defaults: keywords or tags, or 'all'",
    "fuzzymatching": "true: fuzzy matching of person names",
    "limit": "the most results to return",
    "offset": "results to skip (stable order)",
}
_RETRIEVE = {"accept": "media type of the response, as in the Accept header (PS3.18 8.3.3.1)"}
_RENDERED = {
    "accept": "media type of the rendered image (image/jpeg, image/png)",
    "quality": "compression quality, 1 to 100",
    "viewport": "vw,vh[,sx,sy,sw,sh]: size of the image and region of the source",
    "window": "center,width,function: the VOI window (LINEAR, LINEAR_EXACT, SIGMOID)",
    "annotation": "patient, technique: burnt-in annotations",
    "charset": "character set of annotations",
    "iccprofile": "no, yes, srgb, adobergb, rommrgb",
}
_THUMBNAIL = {"accept": _RENDERED["accept"], "viewport": _RENDERED["viewport"]}
_WADO_URI = {
    "requestType": "WADO (required)",
    "studyUID": "Study Instance UID (required)",
    "seriesUID": "Series Instance UID (required)",
    "objectUID": "SOP Instance UID (required)",
    "contentType": "application/dicom, image/jpeg, ...",
    "charset": "character set of the response",
    "anonymize": "yes: remove patient identification",
    "annotation": "patient, technique",
    "rows": "rows of the rendered image",
    "columns": "columns of the rendered image",
    "region": "x1,y1,x2,y2: the region of the image, as fractions",
    "windowCenter": "window center of the rendered image",
    "windowWidth": "window width of the rendered image",
    "frameNumber": "the frame to render",
    "imageQuality": "compression quality, 1 to 100",
    "presentationUID": "a presentation state to apply",
    "presentationSeriesUID": "its series",
    "transferSyntax": "transfer syntax of an application/dicom response",
}


@dataclass(frozen=True)
class Transaction:
    """What PS3.18 says about one operation on one resource."""

    name: str  # the PS3.18 transaction (WADL method id), e.g. SearchForStudies
    media_types: tuple[str, ...] = ()
    query: dict[str, str] = field(default_factory=dict)
    request_media_types: tuple[str, ...] = ()


_LEVELS = {"studies": "Study", "series": "Series", "instances": "Instance"}
_COLLECTIONS = {"studies": "Studies", "series": "Series", "instances": "Instances"}


def transaction(method: str, relative: str | None, path: str) -> Transaction | None:
    """The PS3.18 transaction for a method on a path (`relative`: the path under the DICOMweb base)."""
    method = method.upper()
    if relative is None:  # outside the DICOMweb service: the operator endpoints and this module
        return _OPERATOR.get((method, path))
    parts = [p for p in relative.strip("/").split("/") if p]
    if not parts:
        if method == "OPTIONS":
            return Transaction("RetrieveCapabilities", (WADL_MEDIA_TYPE,))
        if method == "GET":
            return Transaction("RetrieveWADOURI", ("application/dicom", "image/jpeg"), _WADO_URI)
        return None
    last, level = parts[-1], ""
    for i, part in enumerate(parts):
        if part in _LEVELS and i + 1 < len(parts) and _is_param(parts[i + 1]):
            level = _LEVELS[part]
    if method == "GET":
        if last in _COLLECTIONS:
            return Transaction(f"SearchFor{_COLLECTIONS[last]}", (DICOM_JSON, MULTIPART_XML), _QIDO)
        if _is_param(last) and len(parts) >= 2 and parts[-2] in _LEVELS:
            return Transaction(f"Retrieve{level}", (MULTIPART_DICOM,), _RETRIEVE)
        if last == "metadata":
            return Transaction(f"Retrieve{level}Metadata", (DICOM_JSON,), _RETRIEVE)
        if last == "rendered":
            name = "RetrieveFramesRendered" if "frames" in parts else f"Retrieve{level}Rendered"
            return Transaction(name, ("image/jpeg", "image/png"), _RENDERED)
        if last == "thumbnail":
            name = "RetrieveFramesThumbnail" if "frames" in parts else f"Retrieve{level}Thumbnail"
            return Transaction(name, ("image/jpeg", "image/png"), _THUMBNAIL)
        if len(parts) >= 2 and parts[-2] == "frames":
            return Transaction("RetrieveFrames", (MULTIPART_OCTETS,), _RETRIEVE)
        if "bulkdata" in parts:
            return Transaction("RetrieveBulkdata", (MULTIPART_OCTETS,), _RETRIEVE)
        if last == "pixeldata":
            return Transaction(f"Retrieve{level}PixelData", (MULTIPART_OCTETS,), _RETRIEVE)
    if method == "POST" and parts[0] == "studies" and len(parts) <= 2:
        request = (MULTIPART_DICOM, 'multipart/related; type="application/dicom+json"')
        name = "StoreStudyInstances" if len(parts) == 2 else "StoreInstances"
        return Transaction(name, (DICOM_JSON,), {}, request)
    if method == "DELETE" and level and _is_param(last):
        return Transaction(f"Delete{level}", ())
    return None


_OPERATOR = {
    ("GET", "/health"): Transaction("Health", ("application/json",)),
    ("GET", "/metrics"): Transaction("Metrics", ("text/plain",)),
    ("GET", "/openapi.json"): Transaction("OpenAPI", ("application/json",)),
}


def _is_param(part: str) -> bool:
    return part.startswith("{") and part.endswith("}")


def _words(name: str) -> str:
    """SearchForStudies -> Search for Studies (PS3.18's headings)."""
    words = re.findall(r"WADOURI|PixelData|OpenAPI|[A-Z][a-z]*", name)
    return (
        " ".join(
            w if i == 0 or w in ("Study", "Series", "Studies", "Instance", "Instances") else w.lower()
            for i, w in enumerate(words)
        )
        .replace("wadouri", "WADO-URI")
        .replace("openapi", "OpenAPI")
    )


# -- walking the app -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One method of one route, as the app has it."""

    path: str  # OpenAPI form: /dicom-web/studies/{study}
    method: str  # upper case
    endpoint: Any
    params: dict[str, str]  # path parameter -> JSON schema type


def walk(
    routes: list[BaseRoute], prefix: str = "", params: dict[str, Any] | None = None
) -> Iterator[tuple[str, BaseRoute, dict[str, Any]]]:
    """(full path format, route, path convertors incl. its Mounts') for every leaf route."""
    params = params or {}
    for route in routes:
        if isinstance(route, Mount):
            inner = prefix + route.path_format.removesuffix("/{path}")
            mounted = {k: v for k, v in route.param_convertors.items() if k != "path"}
            yield from walk(list(route.routes), inner, {**params, **mounted})
        elif isinstance(route, Host):
            yield from walk(list(route.routes), prefix, params)
        elif isinstance(route, Route | WebSocketRoute):
            yield prefix + route.path_format, route, {**params, **route.param_convertors}
        else:  # an unknown kind of route: described by what it says of itself, if anything
            yield prefix + str(getattr(route, "path_format", getattr(route, "path", ""))), route, params


def operations(routes: list[BaseRoute]) -> list[Operation]:
    """Every (path, method) the app answers, HEAD left out where Starlette added it to a GET."""
    found = []
    for path, route, convertors in walk(routes):
        if not isinstance(route, Route):
            continue  # WebSocket routes have no place in OpenAPI
        methods = sorted(route.methods or {"GET"})
        if "GET" in methods and "HEAD" in methods:
            methods.remove("HEAD")
        params = {name: _schema_type(conv) for name, conv in convertors.items()}
        for method in methods:
            found.append(Operation(path or "/", method, route.endpoint, params))
    return found


def _schema_type(convertor: object) -> str:
    if isinstance(convertor, IntegerConvertor):
        return "integer"
    if isinstance(convertor, FloatConvertor):
        return "number"
    if isinstance(convertor, UUIDConvertor):
        return "uuid"
    return "string"


def _doc(op: Operation) -> str:
    """The docstring of the operation: the method's on a class endpoint, else the function's."""
    endpoint = op.endpoint
    if inspect.isclass(endpoint):
        doc = inspect.getdoc(getattr(endpoint, op.method.lower(), None)) or inspect.getdoc(endpoint)
    else:
        doc = inspect.getdoc(endpoint)
    return doc or ""


def parse_doc(doc: str) -> tuple[str, str, dict[str, str], tuple[str, ...]]:
    """(summary, description, query parameters, media types) from a docstring (see module docstring)."""
    lines = doc.splitlines()
    summary = lines[0].strip() if lines else ""
    query: dict[str, str] = {}
    media: list[str] = []
    section = None
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.lower().startswith("query parameters:"):
            section = "query"
            continue
        if stripped.lower().startswith("media types:"):
            media += [m.strip() for m in stripped.split(":", 1)[1].split(",") if m.strip()]
            section = None
            continue
        if section == "query":
            match = re.match(r"^[-*]?\s*`?([A-Za-z0-9{}_.-]+)`?\s*:\s*(.*)$", stripped)
            if match and line[:1].isspace():
                query[match[1]] = match[2]
                continue
            if stripped:
                section = None
    description = "\n".join(lines[1:]).strip()
    return summary, description, query, tuple(media)


# -- OpenAPI -------------------------------------------------------------------------------------

_DICOM_JSON_SCHEMA = {
    "type": "object",
    "description": "A dataset in the DICOM JSON Model (PS3.18 F.2)",
    "patternProperties": {
        "^[0-9A-Fa-f]{8}$": {
            "type": "object",
            "required": ["vr"],
            "properties": {
                "vr": {"type": "string", "pattern": "^[A-Z]{2}$"},
                "Value": {"type": "array"},
                "InlineBinary": {"type": "string"},
                "BulkDataURI": {"type": "string"},
            },
        }
    },
    "additionalProperties": False,
}


def _content(media_type: str, name: str) -> dict[str, Any]:
    if media_type == DICOM_JSON:
        ref = {"$ref": "#/components/schemas/DicomJsonDataset"}
        if name.startswith("Store"):
            return {"schema": ref}
        return {"schema": {"type": "array", "items": ref}}
    if media_type == "application/json":
        return {"schema": {"type": "object"}}
    if media_type.startswith("text/") or media_type.endswith("+xml"):
        return {"schema": {"type": "string"}}
    return {"schema": {"type": "string", "format": "binary"}}


def build_openapi(routes: list[BaseRoute], base_path: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these routes."""
    base = base_path.rstrip("/")
    paths: dict[str, dict[str, Any]] = {}
    ids: set[str] = set()
    for op in operations(routes):
        relative = _relative(op.path, base)
        known = transaction(op.method, relative, op.path)
        summary, description, doc_query, doc_media = parse_doc(_doc(op))
        name = known.name if known else _identifier(op)
        operation_id = name if name not in ids else f"{name}_{_identifier(op)}"
        ids.add(operation_id)
        operation: dict[str, Any] = {"operationId": operation_id, "tags": [_tag(relative, known)]}
        # a PS3.18 transaction is summed up by its name; the docstring describes how it is done
        if known:
            operation["summary"] = _words(known.name)
            description = "\n\n".join(p for p in (summary, description) if p)
        elif summary:
            operation["summary"] = summary
        if description:
            operation["description"] = description
        if known and relative is not None:
            operation["x-dicom-transaction"] = known.name
        parameters: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": _param_schema(t)} for p, t in op.params.items()
        ]
        query = doc_query or (known.query if known else {})
        for q, what in query.items():
            if q == "{attributeID}":
                continue  # any attribute: said in the description, not a parameter name
            parameters.append(
                {"name": q, "in": "query", "required": False, "description": what, "schema": {"type": "string"}}
            )
        if query.get("{attributeID}"):
            operation["description"] = (
                operation.get("description", "") + "\n\nAny attribute matches: `{attributeID}={value}` "
                "with a keyword or tag (PS3.18 8.3.4)."
            ).strip()
        if parameters:
            operation["parameters"] = parameters
        media = doc_media or (known.media_types if known else ())
        ok: dict[str, Any] = {"description": "Success"}
        if media:
            ok["content"] = {m: _content(m, name) for m in media}
        operation["responses"] = {
            "200": ok,
            "default": {
                "description": "An error, with a message that says what was wrong",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        }
        if known and known.request_media_types:
            operation["requestBody"] = {
                "required": True,
                "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in known.request_media_types},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Pergamon",
            "version": _version(),
            "summary": "DICOMweb (PS3.18: QIDO-RS, WADO-RS, STOW-RS, WADO-URI) and operator endpoints",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": {"DicomJsonDataset": _DICOM_JSON_SCHEMA}},
    }


def _relative(path: str, base: str) -> str | None:
    """The path under the DICOMweb base, or None outside it."""
    if path == base or path == base + "/":
        return "/"
    if path.startswith(base + "/"):
        return path[len(base) :]
    return None


def _tag(relative: str | None, known: Transaction | None) -> str:
    if relative is None:
        return "operator"
    if known is None:
        return "dicomweb"
    name = known.name
    if name.startswith("SearchFor"):
        return "QIDO-RS"
    if name.startswith("Store"):
        return "STOW-RS"
    if name == "RetrieveWADOURI":
        return "WADO-URI"
    if name == "RetrieveCapabilities":
        return "capabilities"
    return "WADO-RS"


def _identifier(op: Operation) -> str:
    return op.method.lower() + re.sub(r"[^A-Za-z0-9]+", "_", op.path).rstrip("_")


def _param_schema(kind: str) -> dict[str, str]:
    return {"type": "string", "format": "uuid"} if kind == "uuid" else {"type": kind}


def _version() -> str:
    try:
        return metadata.version("pergamon")
    except metadata.PackageNotFoundError:
        return "0"


# -- WADL (PS3.18 Annex H) -----------------------------------------------------------------------


def build_wadl(routes: list[BaseRoute], base_path: str, service_url: str) -> bytes:
    """The Capabilities Description: the DICOMweb resource tree with its methods."""
    ET.register_namespace("", WADL_NS)
    base = base_path.rstrip("/")
    application = ET.Element(f"{{{WADL_NS}}}application")
    doc = ET.SubElement(application, f"{{{WADL_NS}}}doc", {"title": "Pergamon DICOMweb (DICOM PS3.18)"})
    doc.text = "Capabilities Description (PS3.18 Annex H) of the Retrieve Capabilities transaction (8.9)."
    resources = ET.SubElement(application, f"{{{WADL_NS}}}resources", {"base": service_url})
    nodes: dict[str, ET.Element] = {}
    seen: set[tuple[str, str]] = set()
    for op in sorted(operations(routes), key=lambda o: (o.path, o.method)):
        relative = _relative(op.path, base)
        if relative is None or (relative.rstrip("/"), op.method) in seen:
            continue  # outside the service, or the same resource with and without its final slash
        seen.add((relative.rstrip("/"), op.method))
        if relative.strip("/") == "":  # the service root itself (capabilities, WADO-URI)
            if "/" not in nodes:
                nodes["/"] = ET.SubElement(resources, f"{{{WADL_NS}}}resource", {"path": "/"})
            parent = nodes["/"]
        else:
            parent = resources
        key = ""
        for part in [p for p in relative.strip("/").split("/") if p]:
            key += "/" + part
            if key not in nodes:
                nodes[key] = ET.SubElement(parent, f"{{{WADL_NS}}}resource", {"path": part})
                if _is_param(part):
                    ET.SubElement(
                        nodes[key],
                        f"{{{WADL_NS}}}param",
                        {"name": part[1:-1], "style": "template", "type": "xs:string", "required": "true"},
                    )
            parent = nodes[key]
        known = transaction(op.method, relative, op.path)
        _, _, doc_query, doc_media = parse_doc(_doc(op))
        method = ET.SubElement(
            parent, f"{{{WADL_NS}}}method", {"name": op.method, "id": known.name if known else _identifier(op)}
        )
        request = ET.SubElement(method, f"{{{WADL_NS}}}request")
        for q in doc_query or (known.query if known else {}):
            if q != "{attributeID}":
                ET.SubElement(request, f"{{{WADL_NS}}}param", {"name": q, "style": "query", "type": "xs:string"})
        if known:
            for m in known.request_media_types:
                ET.SubElement(request, f"{{{WADL_NS}}}representation", {"mediaType": m})
        response = ET.SubElement(method, f"{{{WADL_NS}}}response", {"status": "200"})
        for m in doc_media or (known.media_types if known else ()):
            ET.SubElement(response, f"{{{WADL_NS}}}representation", {"mediaType": m})
    ET.indent(application)
    body: bytes = ET.tostring(application, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body + b"\n"


# -- routes --------------------------------------------------------------------------------------


class _OptionsRoute(Route):
    """A route that only exists for OPTIONS: other methods on its path go on to the next routes."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope.get("method") != "OPTIONS":
            return Match.NONE, {}
        return super().matches(scope)


def _accepts(request: Request, offered: tuple[str, ...]) -> str | None:
    """The first offered media type the Accept header allows (no header: the first)."""
    header = request.headers.get("accept", "").strip()
    if not header:
        return offered[0]
    wanted = []
    for item in header.split(","):
        kind, *params = [p.strip() for p in item.split(";")]
        q = next((p[2:] for p in params if p.startswith("q=")), "1")
        try:
            if float(q) > 0:
                wanted.append(kind.lower())
        except ValueError:
            wanted.append(kind.lower())
    for media in offered:
        major = media.split("/")[0]
        if media in wanted or "*/*" in wanted or f"{major}/*" in wanted:
            return media
    return None


def routes(archive: Archive) -> list[BaseRoute]:
    base_path = archive.settings.http.base_path.rstrip("/") or ""

    def app_routes(request: Request) -> list[BaseRoute]:
        return list(request.app.routes)

    async def openapi_json(request: Request) -> Response:
        """The OpenAPI 3.1 description of every route of this server.

        Media types: application/json
        """
        state = request.app.state
        cached = getattr(state, "openapi_document", None)
        if cached is None:
            cached = build_openapi(app_routes(request), base_path)
            state.openapi_document = cached
        return JSONResponse(cached)

    async def capabilities(request: Request) -> Response:
        """Retrieve Capabilities (PS3.18 8.9): the WADL description of the DICOMweb service.

        Media types: application/vnd.sun.wadl+xml, application/xml
        """
        media = _accepts(request, (WADL_MEDIA_TYPE, "application/xml", "text/xml"))
        if media is None:
            return Response(
                f"the capabilities are offered as {WADL_MEDIA_TYPE} only\n", status_code=406, media_type="text/plain"
            )
        service_url = f"{request.url.scheme}://{request.url.netloc}{base_path}/"
        cache = getattr(request.app.state, "wadl_documents", None)
        if cache is None:
            cache = request.app.state.wadl_documents = {}
        if service_url not in cache:
            cache[service_url] = build_wadl(app_routes(request), base_path, service_url)
        methods = {op.method for op in operations(app_routes(request)) if _relative(op.path, base_path) == "/"}
        return Response(cache[service_url], media_type=media, headers={"Allow": ", ".join(sorted(methods))})

    found: list[BaseRoute] = [Route("/openapi.json", openapi_json, methods=["GET"])]
    for path in dict.fromkeys([base_path or "/", base_path + "/"]):
        found.append(_OptionsRoute(path, capabilities, methods=["OPTIONS"]))
    return found
