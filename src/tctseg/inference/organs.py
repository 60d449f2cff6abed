"""What each organ class is outside tctseg: its SNOMED CT code and its display colour.

The one home of these facts: the prediction preview draws organs in these colours and the
DICOM SEG writer codes each segment with them, so a picture and a 3D Slicer view agree.
Class names are the config's ``classes`` (e.g. ``left_kidney``). A class not listed here
gets the generic SNOMED concept "Organ" and a colour from :data:`FALLBACK_COLOURS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Organ:
    """``snomed``: (code value, meaning) in SNOMED CT (scheme ``SCT``); ``colour``: RGB 0–255."""

    snomed: tuple[str, str]
    colour: tuple[int, int, int]


# SNOMED CT codes as DICOM CID 7166 and TotalSegmentator's DICOM export use them; left and
# right kidney are their own concepts ("Structure of left/right kidney").
ORGANS: dict[str, Organ] = {
    "liver": Organ(("10200004", "Liver"), (221, 130, 101)),
    "spleen": Organ(("78961009", "Spleen"), (157, 108, 162)),
    "left_kidney": Organ(("18639004", "Left kidney"), (255, 215, 0)),
    "right_kidney": Organ(("9846003", "Right kidney"), (60, 180, 75)),
    "kidney": Organ(("64033007", "Kidney"), (255, 215, 0)),
    "pancreas": Organ(("15776009", "Pancreas"), (0, 151, 206)),
    "stomach": Organ(("69695003", "Stomach"), (216, 101, 79)),
    "gallbladder": Organ(("28231008", "Gallbladder"), (139, 150, 98)),
    "esophagus": Organ(("32849002", "Esophagus"), (211, 171, 143)),
    "aorta": Organ(("15825003", "Aorta"), (230, 25, 75)),
    "inferior_vena_cava": Organ(("64131007", "Inferior vena cava"), (0, 80, 200)),
    "duodenum": Organ(("38848004", "Duodenum"), (255, 253, 229)),
}
GENERIC_ORGAN = ("91772007", "Organ")
# the segmented property category of every organ segment
ANATOMICAL_STRUCTURE = ("91723000", "Anatomical Structure")
FALLBACK_COLOURS = ((245, 130, 48), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def organ(name: str, index: int = 0) -> Organ:
    """The catalogue entry of class ``name``; unknown names get the generic code and the
    ``index``-th fallback colour (``index``: the class's position, so colours stay distinct)."""
    known = ORGANS.get(name.lower())
    if known is not None:
        return known
    return Organ(GENERIC_ORGAN, FALLBACK_COLOURS[index % len(FALLBACK_COLOURS)])


def display_name(name: str) -> str:
    """``left_kidney`` → ``left kidney`` (for legends and printed summaries)."""
    return name.replace("_", " ")
