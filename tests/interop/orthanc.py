"""Orthanc as an interop peer: a private Orthanc process and a small client for its REST API.

`OrthancServer` runs the Debian `/usr/sbin/Orthanc` (never the packaged service) as a child
process with a generated JSON configuration in a folder of its own: its own storage and index,
a free DICOM port and HTTP port, HTTP on localhost only without authentication, no plugins
unless asked (`dicomweb_servers` loads the DICOMweb plugin of the Debian package
orthanc-dicomweb, see `dicomweb_plugin`), and the DICOM peers it should know (`DicomModalities`).
It is started once per test module and stopped with SIGTERM; `reset()` deletes everything it
stores between tests.

The REST client uses urllib only (httpx is not a dependency). Orthanc 1.10 specifics worth
knowing are noted where they matter (see `move` and `query`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ORTHANC_AET = "ORTHANC"
# where Debian's orthanc-dicomweb puts its plugin (a symlink into /usr/lib/orthanc)
DICOMWEB_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")


def dicomweb_plugin() -> str | None:
    """The path of the DICOMweb plugin (libOrthancDicomWeb.so[.version]), or None if not installed."""
    for folder in DICOMWEB_PLUGIN_DIRS:
        for candidate in sorted(Path(folder).glob("libOrthancDicomWeb.so*")) if Path(folder).is_dir() else []:
            if candidate.is_file():
                return str(candidate)
    return None


class OrthancError(RuntimeError):
    """An Orthanc REST call answered with an HTTP error; the message carries Orthanc's explanation."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"Orthanc {method} {path} -> HTTP {status}: {body}")
        self.status = status
        self.body = body


class OrthancServer:
    """One Orthanc process with its own folders and ports.

    `modalities` maps Orthanc's modality identifier to (AE title, host, port), as written to
    `DicomModalities`; the identifier is what the REST API uses (`/modalities/<id>/store`).
    `dicomweb_servers` (identifier -> base URL of a DICOMweb service) loads the DICOMweb plugin
    (`plugin`, found by `dicomweb_plugin()` if not given) with its own root at `/dicom-web/` and
    these servers as its `DicomWeb.Servers` (`/dicom-web/servers/<id>/...`); None: no plugin.
    `verbose`: Orthanc's `--verbose` log (what the tests read on failure); benchmarks turn it off.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        dicom_port: int,
        http_port: int,
        modalities: Mapping[str, tuple[str, str, int]],
        aet: str = ORTHANC_AET,
        dicomweb_servers: Mapping[str, str] | None = None,
        plugin: str | None = None,
        verbose: bool = True,
    ) -> None:
        self.binary = binary
        self.verbose = verbose
        self.workdir = workdir
        self.dicom_port = dicom_port
        self.http_port = http_port
        self.aet = aet
        self.modalities = dict(modalities)
        self.dicomweb_servers = None if dicomweb_servers is None else dict(dicomweb_servers)
        self.plugin = plugin
        if self.dicomweb_servers is not None and self.plugin is None:
            self.plugin = dicomweb_plugin()
            if self.plugin is None:
                raise FileNotFoundError(
                    f"no DICOMweb plugin in {DICOMWEB_PLUGIN_DIRS} (apt-get install orthanc-dicomweb)"
                )
        self.base_url = f"http://127.0.0.1:{http_port}"
        self.config_path = workdir / "orthanc.json"
        self.log_path = workdir / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- process ---------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        config = self._core_config()
        if self.dicomweb_servers is not None:
            config["Plugins"] = [self.plugin]
            config["DicomWeb"] = {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": False,
                "Servers": {name: [url] for name, url in self.dicomweb_servers.items()},
            }
        return config

    def _core_config(self) -> dict[str, Any]:
        return {
            "Name": "pergamon-interop",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "HttpDescribeErrors": True,
            "WebDavEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {name: list(peer) for name, peer in self.modalities.items()},
            # SCU associations are closed at once (the default keeps them open 5 s after a job)
            "DicomAssociationCloseDelay": 0,
            "DicomScuTimeout": 20,
            "StableAge": 1,
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "OverwriteInstances": True,
        }

    def start(self, timeout: float = 30) -> None:
        """Write the configuration, start Orthanc and wait until its REST API answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        # dcmtk (linked into Orthanc) leaves Nagle on unless TCP_NODELAY=1: ~40 ms per DIMSE message
        env = {**os.environ, "TCP_NODELAY": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, *(["--verbose"] if self.verbose else []), str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode} at start-up:\n{self.log_tail()}")
            try:
                system = self.get("/system")
            except (OSError, OrthancError):
                system = None
            if system is not None and system.get("DicomAet") == self.aet and _listening(self.dicom_port):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Orthanc did not answer on port {self.http_port}:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then SIGKILL if Orthanc has not exited within `timeout` seconds."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> OrthancServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- REST ------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
        timeout: float = 60,
    ) -> bytes:
        """One REST call; raises OrthancError on an HTTP error status."""
        req = urllib.request.Request(self.base_url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise OrthancError(method, path, exc.code, detail) from None

    def get(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def get_bytes(self, path: str) -> bytes:
        return self.request("GET", path)

    def post(self, path: str, payload: Any, *, timeout: float = 60) -> Any:
        data = self.request("POST", path, json.dumps(payload).encode(), timeout=timeout)
        return json.loads(data) if data.strip() else None

    def put(self, path: str, payload: Any) -> Any:
        data = self.request("PUT", path, json.dumps(payload).encode())
        return json.loads(data) if data.strip() else None

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    # -- helpers ---------------------------------------------------------------------------------

    def upload(self, path: Path | str) -> dict[str, Any]:
        """POST /instances with a Part-10 file: {"ID", "ParentStudy", "Status", ...}."""
        answer = json.loads(
            self.request("POST", "/instances", Path(path).read_bytes(), content_type="application/dicom")
        )
        if answer.get("Status") not in ("Success", "AlreadyStored"):
            raise AssertionError(f"Orthanc refused {path}: {answer}")
        return dict(answer)

    def reset(self) -> None:
        """Delete every patient (hence every study, series and instance) Orthanc stores."""
        for patient in self.get("/patients"):
            self.delete(f"/patients/{patient}")

    def instance_ids(self) -> list[str]:
        return list(self.get("/instances"))

    def instances_by_sop_uid(self) -> dict[str, str]:
        """SOP Instance UID -> Orthanc instance identifier, for everything stored."""
        found = self.post("/tools/find", {"Level": "Instance", "Query": {}, "Expand": True})
        return {item["MainDicomTags"]["SOPInstanceUID"]: item["ID"] for item in found}

    def instance_file(self, instance_id: str) -> bytes:
        """The Part-10 file Orthanc stores for an instance."""
        return self.get_bytes(f"/instances/{instance_id}/file")

    def store_to(self, modality: str, resources: Iterable[str], *, timeout: float = 60) -> dict[str, Any]:
        """C-STORE SCU: send Orthanc resources (any level) to a modality, synchronously."""
        answer = self.post(
            f"/modalities/{modality}/store",
            {"Resources": list(resources), "Synchronous": True},
            timeout=timeout,
        )
        return dict(answer)

    def query(self, modality: str, level: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """C-FIND SCU through REST; the answers in `?expand&simplify` form (tag name -> value)."""
        created = self.post(f"/modalities/{modality}/query", {"Level": level, "Query": dict(query)})
        answers = self.get(f"/queries/{created['ID']}/answers?expand&simplify")
        return [dict(a) for a in answers]

    def move(self, modality: str, level: str, resources: list[Mapping[str, str]], target_aet: str) -> Any:
        """C-MOVE SCU: ask `modality` to send `resources` (lists of keys, e.g. StudyInstanceUID) to `target_aet`.

        In Orthanc 1.10 this call is synchronous (no job) and `Resources` is a list of
        query objects, not Orthanc identifiers as its OpenAPI text says (fixed in 1.11).
        """
        return self.post(
            f"/modalities/{modality}/move",
            {"Level": level, "Resources": [dict(r) for r in resources], "TargetAet": target_aet},
        )


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- what dcmtk (inside Orthanc) does to the bytes of a dataset --------------------------------------

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PADDING, _PIXEL_DATA = 0xFFFCFFFC, 0x7FE00010


def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(preamble + DICM + File Meta group, dataset bytes) of a Part-10 file."""
    if data[128:132] != b"DICM":
        raise ValueError("not a Part-10 file (no DICM prefix at offset 128)")
    offset = 132
    while offset < len(data):
        group = struct.unpack_from("<H", data, offset)[0]
        if group != 0x0002:
            break
        if data[offset + 4 : offset + 6] in _LONG_VRS:
            offset += 12 + struct.unpack_from("<I", data, offset + 8)[0]
        else:
            offset += 8 + struct.unpack_from("<H", data, offset + 6)[0]
    return data[:offset], data[offset:]


def _elements(data: bytes, offset: int = 0, *, in_item: bool = False) -> tuple[list[tuple[int, bytes, int, int]], int]:
    """Explicit VR Little Endian elements from `offset`: [(tag, VR, start, end)] and the end offset.

    In an undefined-length item, stops after its Item Delimitation Item.
    """
    found: list[tuple[int, bytes, int, int]] = []
    while offset < len(data):
        group, element = struct.unpack_from("<HH", data, offset)
        tag = group << 16 | element
        if in_item and tag == _ITEM_END:
            return found, offset + 8
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            length, value = struct.unpack_from("<I", data, offset + 8)[0], offset + 12
        else:
            length, value = struct.unpack_from("<H", data, offset + 6)[0], offset + 8
        end = _skip_items(data, value) if length == _UNDEFINED else value + length
        found.append((tag, vr, offset, end))
        offset = end
    if in_item:
        raise ValueError("undefined-length item without an Item Delimitation Item")
    return found, offset


def _skip_items(data: bytes, offset: int) -> int:
    """The end of an undefined-length value (sequence or encapsulated pixel data) starting at offset."""
    while True:
        group, element, length = struct.unpack_from("<HHI", data, offset)
        tag = group << 16 | element
        offset += 8
        if tag == _SEQUENCE_END:
            return offset
        if tag != _ITEM:
            raise ValueError(f"({group:04X},{element:04X}) where an item was expected")
        offset = _elements(data, offset, in_item=True)[1] if length == _UNDEFINED else offset + length


def dcmtk_form(dataset: bytes, *, drop_padding: bool) -> bytes:
    """The dataset bytes after dcmtk (Orthanc 1.10) has parsed and written them again.

    Explicit VR Little Endian only. What changes (top level), as measured with Orthanc 1.10.1:
    - Dataset Trailing Padding (FFFC,FFFC) is dropped by Orthanc's C-STORE SCU (`drop_padding`),
      but kept when Orthanc stores what its C-STORE SCP received;
    - group lengths (gggg,0000) are recalculated, e.g. 693_J2KR.dcm has a wrong (7FE0,0000);
    - encapsulated Pixel Data with VR OW (not allowed: PS3.5 A.4) is written with VR OB,
      e.g. MR_small_jpeg_ls_lossless.dcm.
    Everything else is kept byte for byte, and POST /instances keeps a file exactly as uploaded.
    """
    elements, _ = _elements(dataset)
    chunks: list[tuple[int, bytearray]] = []
    for tag, vr, start, end in elements:
        if drop_padding and tag == _PADDING:
            continue
        raw = bytearray(dataset[start:end])
        if tag == _PIXEL_DATA and vr == b"OW" and struct.unpack_from("<I", raw, 8)[0] == _UNDEFINED:
            raw[4:6] = b"OB"
        chunks.append((tag, raw))
    for index, (tag, raw) in enumerate(chunks):
        if tag & 0xFFFF == 0 and raw[4:6] == b"UL":
            group = tag >> 16
            length = sum(len(other) for other_tag, other in chunks[index + 1 :] if other_tag >> 16 == group)
            raw[8:12] = struct.pack("<I", length)
    return b"".join(bytes(raw) for _, raw in chunks)
