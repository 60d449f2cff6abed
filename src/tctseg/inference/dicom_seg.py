"""The prediction of a DICOM series as a DICOM Segmentation object (``--output-format dicom-seg``).

One BINARY segment per organ class (segment number = class id), coded with its SNOMED CT
concept under the category "Anatomical Structure" and given its display colour
(:mod:`tctseg.inference.organs`), algorithm type AUTOMATIC (tctseg and the method's name). Each frame
references the source slice it lies on (highdicom writes the Derivation Image and Referenced
Series sequences from the source datasets), so 3D Slicer (QuantitativeReporting) and OHIF
draw it on the original series. Empty frames are left out, as highdicom does by default.

Frame k of the label map is voxel slice k of :func:`tctseg.data.io.load_volume`'s array, whose
slices come in the order of :func:`tctseg.data.io.dicom_series_files`; a DICOM frame is
``[rows, columns]`` = ``[j, i]``, hence the transpose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tctseg.errors import DataError
from tctseg.inference.organs import ANATOMICAL_STRUCTURE, display_name, organ


def segmentation_dataset(series_folder: Path, labels: np.ndarray, class_names: Sequence[str], algorithm: str):
    """A highdicom ``Segmentation`` of ``labels`` ``[X, Y, Z]`` (ids 1..N = ``class_names``, on the
    grid of the series in ``series_folder``) that references that series' slices."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    import tctseg
    from tctseg.data.io import dicom_series_files

    files = dicom_series_files(Path(series_folder))
    if len(files) != labels.shape[2]:
        raise DataError(f"{series_folder}: {len(files)} slice files, but the label map has {labels.shape[2]} slices")
    try:
        sources = [pydicom.dcmread(f) for f in files]
    except (OSError, pydicom.errors.InvalidDicomError) as e:
        raise DataError(f"{series_folder}: cannot read a slice for the DICOM SEG ({e})") from None
    fill_identifiers(sources, series_folder)
    frames = np.ascontiguousarray(np.transpose(labels, (2, 1, 0)), dtype=np.uint8)  # [k, j, i] = [frame, row, column]
    if frames.shape[1:] != (int(sources[0].Rows), int(sources[0].Columns)):
        raise DataError(f"{series_folder}: slices are {sources[0].Rows}×{sources[0].Columns}, the label map {frames.shape[1:]}")
    identification = hd.AlgorithmIdentificationSequence(
        name=f"tctseg {algorithm}", version=tctseg.__version__, family=codes.cid7162.ArtificialIntelligence
    )
    category = hd.sr.CodedConcept(ANATOMICAL_STRUCTURE[0], "SCT", ANATOMICAL_STRUCTURE[1])
    descriptions = []
    for class_id, name in enumerate(class_names, start=1):
        entry = organ(name, class_id - 1)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=class_id,
                segment_label=display_name(name),
                segmented_property_category=category,
                segmented_property_type=hd.sr.CodedConcept(entry.snomed[0], "SCT", entry.snomed[1]),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=identification,
                display_color=hd.color.CIELabColor.from_rgb(*entry.colour),
            )
        )
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="tctseg",
        manufacturer_model_name=algorithm,
        software_versions=tctseg.__version__,
        device_serial_number="none",
        series_description=f"tctseg {algorithm} segmentation",
    )


def fill_identifiers(sources: list, series_folder: Path) -> None:
    """Give anonymised slices (in memory only; the files are never touched) the identifiers a
    SEG must reference: SOP Class and Instance UID from each file's meta header (the same
    facts), and — where every slice leaves them empty — a Study and Series Instance UID
    derived deterministically from the series' Frame of Reference (or folder name). The
    per-frame references to the slices' SOP Instance UIDs stay exact either way."""
    from pydicom.uid import generate_uid

    seed = str(getattr(sources[0], "FrameOfReferenceUID", "") or Path(series_folder).resolve().name)
    for key, derived in (("StudyInstanceUID", generate_uid(entropy_srcs=[seed, "study"])),
                         ("SeriesInstanceUID", generate_uid(entropy_srcs=[seed, "series"]))):
        if not any(str(getattr(d, key, "") or "") for d in sources):
            for d in sources:
                setattr(d, key, derived)
    for d in sources:
        meta = getattr(d, "file_meta", None)
        if not str(getattr(d, "SOPClassUID", "") or "") and meta is not None:
            d.SOPClassUID = meta.MediaStorageSOPClassUID
        if not str(getattr(d, "SOPInstanceUID", "") or "") and meta is not None:
            d.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        if not str(getattr(d, "SOPInstanceUID", "") or ""):
            raise DataError(f"{series_folder}: a slice has no SOP Instance UID; a DICOM SEG cannot reference it")
