"""Checks of the test corpus in tests/samples.py (the files other tests store)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import samples
from pydicom import uid
from pydicom.pixels import pixel_array

DCMDUMP = shutil.which("dcmdump")
STORESCU = shutil.which("storescu")

REQUIRED_SOP_CLASSES = {
    uid.ComputedRadiographyImageStorage,
    uid.DigitalXRayImageStorageForPresentation,
    uid.DigitalXRayImageStorageForProcessing,
    uid.DigitalMammographyXRayImageStorageForPresentation,
    uid.DigitalMammographyXRayImageStorageForProcessing,
    uid.BreastTomosynthesisImageStorage,
    uid.BreastProjectionXRayImageStorageForPresentation,
    uid.BreastProjectionXRayImageStorageForProcessing,
    uid.CTImageStorage,
    uid.EnhancedCTImageStorage,
    uid.MRImageStorage,
    uid.EnhancedMRImageStorage,
    uid.NuclearMedicineImageStorage,
    uid.PositronEmissionTomographyImageStorage,
    uid.UltrasoundImageStorage,
    uid.UltrasoundMultiFrameImageStorage,
    uid.XRayAngiographicImageStorage,
    uid.XRayRadiofluoroscopicImageStorage,
    uid.TwelveLeadECGWaveformStorage,
    uid.GeneralECGWaveformStorage,
    uid.GrayscaleSoftcopyPresentationStateStorage,
    uid.ColorSoftcopyPresentationStateStorage,
    uid.PseudoColorSoftcopyPresentationStateStorage,
    uid.KeyObjectSelectionDocumentStorage,
    uid.BasicTextSRStorage,
    uid.EnhancedSRStorage,
    uid.ComprehensiveSRStorage,
    uid.Comprehensive3DSRStorage,
    uid.MammographyCADSRStorage,
    uid.EncapsulatedPDFStorage,
    uid.EncapsulatedCDAStorage,
    uid.SegmentationStorage,
    uid.ParametricMapStorage,
    uid.SecondaryCaptureImageStorage,
    uid.VLPhotographicImageStorage,
    uid.VideoPhotographicImageStorage,
    uid.VideoEndoscopicImageStorage,
    uid.RTStructureSetStorage,
    uid.RTPlanStorage,
    uid.RTDoseStorage,
    uid.RawDataStorage,
}
REQUIRED_SYNTAXES = {
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.RLELossless,
    uid.MPEG2MPML,
    uid.MPEG4HP41,
    uid.HEVCMP51,
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("samples")
    t0 = time.monotonic()
    corpus = samples.storage_corpus(root / "corpus")
    charsets = samples.charset_samples(root / "charset")
    pyd = samples.pydicom_samples(root / "pydicom")
    elapsed = time.monotonic() - t0
    return SimpleNamespace(
        root=root,
        corpus=corpus,
        charsets=charsets,
        pydicom=pyd,
        all=corpus + charsets + pyd,
        elapsed=elapsed,
    )


def test_storage_corpus_covers_required_sop_classes_and_syntaxes(generated):
    sops = {s.sop_class_uid for s in generated.corpus}
    assert REQUIRED_SOP_CLASSES - sops == set()
    syntaxes = {s.transfer_syntax for s in generated.corpus}
    assert REQUIRED_SYNTAXES - syntaxes == set()
    assert len(generated.corpus) == len(samples.CORPUS_PLAN)
    titles = {
        pydicom.dcmread(s.path).ConceptNameCodeSequence[0].CodeValue
        for s in generated.corpus
        if s.sop_class_uid == uid.KeyObjectSelectionDocumentStorage
    }
    assert titles == {"113000", "113001"}


def test_budget(generated):
    total = sum(s.size for s in generated.all)
    assert total < 80 * 1024 * 1024
    assert generated.elapsed < 60, f"generation took {generated.elapsed:.1f} s"


def test_files_are_part10_and_match_their_sample(generated):
    for s in generated.all:
        with s.path.open("rb") as f:
            assert f.read(132)[128:] == b"DICM", s.path
        ds = pydicom.dcmread(s.path)
        meta = ds.file_meta
        assert meta.TransferSyntaxUID == s.transfer_syntax, s.description
        if "MediaStorageSOPInstanceUID differs" not in s.origin:
            assert meta.MediaStorageSOPInstanceUID == s.sop_instance_uid, s.description
        assert meta.MediaStorageSOPClassUID == s.sop_class_uid, s.description
        assert ds.SOPInstanceUID == s.sop_instance_uid
        assert ds.SOPClassUID == s.sop_class_uid
        assert ds.StudyInstanceUID == s.study_uid
        assert ds.SeriesInstanceUID == s.series_uid
        assert str(ds.get("PatientID", "") or "") == s.patient_id
        assert str(ds.get("PatientName", "") or "") == s.patient_name
        assert s.transfer_syntax not in samples.BIG_ENDIAN_SYNTAXES


def test_synthetic_objects_share_one_patient_and_study(generated):
    assert {s.patient_id for s in generated.corpus} == {samples.DEFAULT_PATIENT_ID}
    assert len({s.study_uid for s in generated.corpus}) == 1
    assert len({s.series_uid for s in generated.corpus}) == len(generated.corpus)


def test_sop_instance_uids_are_unique(generated, tmp_path):
    extra = samples.ct_series(tmp_path / "ct", 2, size=32)
    extra.append(samples.big_multiframe(tmp_path / "big", 1 << 20, rows=64, cols=64))
    again = samples.storage_corpus(tmp_path / "again")
    uids = [s.sop_instance_uid for s in generated.all + extra + again]
    assert len(uids) == len(set(uids))
    # a pydicom study UID never belongs to two different patients
    owners: dict[str, set[str]] = {}
    for s in generated.all:
        owners.setdefault(s.study_uid, set()).add(s.patient_id)
    assert all(len(p) == 1 for p in owners.values())


def _source(sample: samples.Sample) -> str:
    """pydicom file name from Sample.origin ("pydicom:<name> [changes] (notes)")."""
    return sample.origin.split()[0].removeprefix("pydicom:")


def test_pydicom_duplicates_rewritten_without_touching_pixel_data(generated):
    rewritten = [s for s in generated.pydicom if "new SOP Instance UID" in s.origin]
    assert {Path(_source(s)).stem for s in rewritten} >= {
        "MR_small_RLE",
        "MR_small_jp2klossless",
        "MR_small_jpeg_ls_lossless",
        "color3d_jpeg_baseline",
        "liver",
    }
    for s in rewritten:
        name = _source(s)
        original = pydicom.dcmread(pydicom.data.get_testdata_file(name, download=False))
        copy = pydicom.dcmread(s.path)
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert copy.SOPInstanceUID != original.SOPInstanceUID
        assert copy["PixelData"].value == original["PixelData"].value
    unchanged = [s for s in generated.pydicom if "[" not in s.origin]
    for s in unchanged:
        name = _source(s)
        src = Path(pydicom.data.get_testdata_file(name, download=False))
        assert s.path.read_bytes() == src.read_bytes()


def test_decodable_pixels_decode(generated):
    for s in generated.all:
        if not s.pixels_decodable:
            continue
        ds = pydicom.dcmread(s.path)
        arr = pixel_array(ds, index=0)
        assert arr.shape[:2] == (ds.Rows, ds.Columns), s.description


@pytest.mark.parametrize(
    "number",
    [
        n
        for n, (_, _, ts, _) in enumerate(samples.CORPUS_PLAN, 1)
        if uid.UID(ts).is_compressed and ts not in samples.LOSSY_SYNTAXES
    ],
)
def test_lossless_corpus_entries_decode_to_the_original_pixels(generated, number):
    desc, sop_class, _ts, opts = samples.CORPUS_PLAN[number - 1]
    opts = {k: v for k, v in opts.items() if k != "refs"}
    native = samples.make_instance(sop_class, seed=number, **opts)
    stored = next(s for s in generated.corpus if s.description == desc)
    decoded = pydicom.dcmread(stored.path).pixel_array
    expected = native.pixel_array
    np.testing.assert_array_equal(decoded, expected, err_msg=desc)


def test_near_lossless_jpeg_ls_stays_within_its_error_bound(generated):
    number, (desc, sop_class, _ts, opts) = next(
        (n, e) for n, e in enumerate(samples.CORPUS_PLAN, 1) if e[2] == uid.JPEGLSNearLossless
    )
    native = samples.make_instance(sop_class, seed=number, **{k: v for k, v in opts.items() if k != "refs"})
    stored = next(s for s in generated.corpus if s.description == desc)
    decoded = pydicom.dcmread(stored.path).pixel_array.astype(np.int32)
    diff = np.abs(decoded - native.pixel_array.astype(np.int32))
    assert 0 < diff.max() <= 2  # dcmcjpls +md 2: really lossy, but NEAR=2


def test_references(generated):
    by_desc = {s.description: s for s in generated.corpus}
    ct = by_desc["CT, Explicit VR LE"].sop_instance_uid
    for desc in ("GSPS, Explicit VR LE", "Basic Text SR, Explicit VR LE", "RT Structure Set, Implicit VR LE"):
        assert ct in by_desc[desc].referenced_sop_instance_uids, desc
    corpus_uids = {s.sop_instance_uid for s in generated.corpus}
    note = next(s for s in generated.corpus if "rejection note" in s.description)
    assert note.referenced_sop_instance_uids
    assert not set(note.referenced_sop_instance_uids) & corpus_uids


def test_no_pixels_for_documents_and_video_not_decodable(generated):
    by_desc = {s.description: s for s in generated.corpus}
    for s in generated.corpus:
        if s.is_video:
            assert not s.pixels_decodable
            ds = pydicom.dcmread(s.path)
            assert ds.NumberOfFrames >= 1
            assert ds["PixelData"].is_undefined_length
    pdf = pydicom.dcmread(by_desc["Encapsulated PDF, Explicit VR LE"].path)
    doc = pdf.EncapsulatedDocument[: pdf.EncapsulatedDocumentLength]
    assert doc.startswith(b"%PDF-1.4") and doc.rstrip().endswith(b"%%EOF")
    ecg = pydicom.dcmread(by_desc["12-lead ECG waveform, Explicit VR LE"].path)
    assert ecg.waveform_array(0).shape[1] == 12


def test_charset_samples_are_encoded_in_their_character_set(generated):
    assert len(generated.charsets) == len(samples.CHARSET_CASES)
    for s, (_key, charset, name, encoded, _src) in zip(
        generated.charsets, samples.CHARSET_CASES, strict=True
    ):
        raw = s.path.read_bytes()
        assert s.encoded_patient_name == encoded
        assert encoded in raw, s.description
        assert s.patient_name == name
        assert str(pydicom.dcmread(s.path).PatientName) == name
        if s.specific_character_set != "ISO_IR 192":
            assert name.encode("utf-8") not in raw, s.description
        if "IR 87" in s.specific_character_set:
            assert b"\x1b$B" in raw
        if "IR 149" in s.specific_character_set:
            assert b"\x1b$)C" in raw
        expected_cs = charset if isinstance(charset, str) else "\\".join(charset)
        assert s.specific_character_set == expected_cs


@pytest.mark.skipif(DCMDUMP is None, reason="dcmdump (dcmtk) not installed")
def test_dcmtk_decodes_charset_names(generated):
    checked = 0
    for s in generated.charsets:
        proc = subprocess.run([DCMDUMP, "+U8", "+P", "0010,0010", str(s.path)], capture_output=True)
        err = proc.stderr.decode(errors="replace")
        if "is not supported by the utilized character set conversion library" in err:
            continue  # e.g. Debian's dcmtk with glibc iconv cannot convert ISO 2022 IR 87
        assert proc.returncode == 0, (s.description, err)
        out = proc.stdout.decode("utf-8")
        assert f"[{s.patient_name}]" in out, (s.description, out)
        checked += 1
    assert checked >= len(generated.charsets) - 2


def test_big_multiframe_50mb(tmp_path):
    size = 50 * 1024 * 1024
    s = samples.big_multiframe(tmp_path, size)
    frame = 512 * 512 * 2
    assert size - frame - 4096 < s.size <= size + 16
    ds = pydicom.dcmread(s.path, stop_before_pixels=True)
    assert ds.SOPClassUID == uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    assert ds.file_meta.TransferSyntaxUID == uid.ExplicitVRLittleEndian
    offset, length = samples.pixel_data_offset(s.path)
    assert length == int(ds.NumberOfFrames) * ds.Rows * ds.Columns * 2
    assert length % 2 == 0
    assert offset + length == s.size
    assert s.number_of_frames == int(ds.NumberOfFrames)
    if DCMDUMP:
        proc = subprocess.run([DCMDUMP, str(s.path)], capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_big_multiframe_pattern_is_verifiable(tmp_path):
    s = samples.big_multiframe(tmp_path, 3 * 1024 * 1024, rows=256, cols=256, fill="pattern")
    offset, length = samples.pixel_data_offset(s.path)
    with s.path.open("rb") as f:
        f.seek(offset)
        index = total = 0
        while chunk := f.read(1 << 20):
            assert chunk == samples.big_multiframe_expected_chunk(index, len(chunk))
            index += 1
            total += len(chunk)
    assert total == length
    arr = pydicom.dcmread(s.path).pixel_array
    assert arr.shape == (s.number_of_frames, 256, 256)


def test_big_multiframe_refuses_pixel_data_over_4gib(tmp_path):
    with pytest.raises(ValueError, match="2\\*\\*32"):
        samples.big_multiframe(tmp_path, 5 * 1024**3)


def test_ct_series(tmp_path):
    series = samples.ct_series(tmp_path, 3)
    assert len({s.series_uid for s in series}) == 1
    assert len({s.study_uid for s in series}) == 1
    for i, s in enumerate(series):
        ds = pydicom.dcmread(s.path)
        assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (512, 512, 16)
        assert ds.InstanceNumber == i + 1
        assert ds.ImagePositionPatient[2] == pytest.approx(1.25 * i)
        assert 512 * 512 * 2 < s.size < 512 * 512 * 2 + 4096
    a = pydicom.dcmread(series[0].path).pixel_array
    b = pydicom.dcmread(series[1].path).pixel_array
    assert not np.array_equal(a, b)


def test_rejection_note_helper(tmp_path):
    ct = samples.make_instance(uid.CTImageStorage)
    note = samples.make_rejection_note([ct])
    s = samples.write(note, tmp_path / "kos.dcm")
    ds = pydicom.dcmread(s.path)
    assert ds.ConceptNameCodeSequence[0].CodeValue == "113001"
    assert ds.StudyInstanceUID == ct.StudyInstanceUID
    assert ds.PatientID == ct.PatientID
    assert s.referenced_sop_instance_uids == (ct.SOPInstanceUID,)
    ev = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert ev.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID


def test_missing_tool_is_an_error(monkeypatch):
    monkeypatch.setattr(samples.shutil, "which", lambda _name: None)
    with pytest.raises(samples.MissingToolError, match="dcmcjpeg"):
        samples.make_instance(uid.CTImageStorage, transfer_syntax=uid.JPEGLosslessSV1)


@pytest.mark.skipif(DCMDUMP is None, reason="dcmdump (dcmtk) not installed")
def test_dcmdump_reads_every_file(generated):
    for s in generated.all:
        proc = subprocess.run([DCMDUMP, str(s.path)], capture_output=True, text=True, errors="replace")
        assert proc.returncode == 0, (s.description, proc.stderr)
        assert "E:" not in proc.stderr, (s.description, proc.stderr)
        if s.origin == "synthetic":
            # some shipped pydicom files have odd-length fragments (dcmtk warns)
            assert not proc.stderr.strip(), (s.description, proc.stderr)


@pytest.mark.skipif(STORESCU is None, reason="storescu (dcmtk) not installed")
def test_storescu_sends_every_file_unchanged(generated, tmp_path):
    from pynetdicom import AE, evt

    received: dict[str, str] = {}

    def on_store(event):
        received[event.request.AffectedSOPInstanceUID] = event.context.transfer_syntax
        return 0x0000

    ae = AE(ae_title="PGMTEST")
    for sop in {s.sop_class_uid for s in generated.all}:
        ae.add_supported_context(sop, list(uid.AllTransferSyntaxes))
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        port = server.server_address[1]
        cmds = samples.storescu_commands(generated.all, "127.0.0.1", port, workdir=tmp_path, called_aet="PGMTEST")
        for cmd in cmds:
            # Debian's dcmtk leaves Nagle on unless TCP_NODELAY=1 (~40 ms per message)
            env = {**os.environ, "TCP_NODELAY": "1"}
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
            assert proc.returncode == 0, proc.stderr
    finally:
        server.shutdown()
    for s in generated.all:
        assert received.get(s.sop_instance_uid) == s.transfer_syntax, s.description
