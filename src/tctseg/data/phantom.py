"""The synthetic abdominal CT phantom, written in the public datasets' own layouts.

Every case is built in a body frame in RAS+ millimetres — nibabel's world convention:
+x toward the patient's Right, +y Anterior, +z Superior — so the liver and the right kidney
sit at positive x, the spleen and the left kidney at negative x. The volume is rendered on a
canonical RAS voxel grid and then stored in the voxel order its dataset uses (KiTS19's
``I, P, L``; RAS or LPS for the others), with the affine that maps it back to the same world
positions, so a reader that honours the affine finds every organ on its correct side.

Anatomy (half the size of an adult, to keep CPU demo volumes small): a body outline with a
subcutaneous fat layer, an abdominal muscle wall, visceral fat with bowel loops, a vertebral
column (bright bone, discs, spinal canal), paraspinal and psoas muscles, aorta and IVC, the
liver (right, large), spleen (left, posterior), both kidneys (beside the spine, contrast-
enhanced) and the pancreas (central, thin, elongated). Organs are smoothly deformed
ellipsoids with jittered size, place and orientation. Liver and spleen get similar HU, so only
shape and place tell them apart. Gaussian noise and a smooth multiplicative/additive bias
field finish the image.

The cases are written as four partially labeled training sets — each label file holds only
its own dataset's organs — laid out like KiTS19, MSD Task03_Liver, Task07_Pancreas and
Task09_Spleen, in the paper's proportions 168 : 104 : 224 : 32 scaled down by ``size``, plus a
fully labeled test set laid out like BTCV. A given seed always gives the same arrays.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from tctseg.errors import ConfigError, OutputError

# The phantom's own ground-truth codes (not any dataset's label ids).
LIVER, SPLEEN, LEFT_KIDNEY, RIGHT_KIDNEY, PANCREAS, AORTA, IVC = 1, 2, 3, 4, 5, 6, 7
ORGAN_NAMES = {
    LIVER: "liver",
    SPLEEN: "spleen",
    LEFT_KIDNEY: "left_kidney",
    RIGHT_KIDNEY: "right_kidney",
    PANCREAS: "pancreas",
    AORTA: "aorta",
    IVC: "inferior_vena_cava",
}

# Output folders, one per imitated dataset.
KITS19_DIR = "kits19"
LIVER_DIR = "Task03_Liver"
PANCREAS_DIR = "Task07_Pancreas"
SPLEEN_DIR = "Task09_Spleen"
BTCV_DIR = "btcv"
DATASET_DIRS = (KITS19_DIR, LIVER_DIR, PANCREAS_DIR, SPLEEN_DIR, BTCV_DIR)

# BTCV's own label ids (Synapse multi-organ: 1 spleen, 2 right kidney, 3 left kidney,
# 4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 IVC, 10 portal/splenic vein,
# 11 pancreas, 12/13 adrenal glands); the phantom has no organ for the missing ids.
BTCV_LABELS = {SPLEEN: 1, RIGHT_KIDNEY: 2, LEFT_KIDNEY: 3, LIVER: 6, AORTA: 8, IVC: 9, PANCREAS: 11}

FIELD_OF_VIEW_XY_MM = (160.0, 136.0)
SLICE_SPACINGS_MM = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
_PARTIAL_PREFIX = ".phantom-partial-"
# marks a folder `tctseg phantom` wrote, as checkpoint_last.pt / log.csv mark a run folder:
# the size, seed and every file it wrote (relative paths), which is all --overwrite may replace
MARKER = ".tctseg-phantom.json"
README = "README.md"


@dataclass(frozen=True)
class PhantomSize:
    """How many cases per dataset folder, and the voxel budget of one volume."""

    train_cases: dict[str, int]
    test_cases: int
    max_voxels: int


# Paper proportions 168 : 104 : 224 : 32 (KiTS19 : Liver : Pancreas : Spleen), at least 2 each.
SIZES: dict[str, PhantomSize] = {
    "tiny": PhantomSize({KITS19_DIR: 3, LIVER_DIR: 2, PANCREAS_DIR: 3, SPLEEN_DIR: 2}, 2, 400_000),
    "demo": PhantomSize({KITS19_DIR: 6, LIVER_DIR: 4, PANCREAS_DIR: 8, SPLEEN_DIR: 2}, 4, 2_000_000),
    "small": PhantomSize({KITS19_DIR: 21, LIVER_DIR: 13, PANCREAS_DIR: 28, SPLEEN_DIR: 4}, 8, 2_000_000),
    "paper-scaled": PhantomSize({KITS19_DIR: 168, LIVER_DIR: 104, PANCREAS_DIR: 224, SPLEEN_DIR: 32}, 30, 2_000_000),
}


# ----------------------------------------------------------------------------- shapes


def _rotation(z_deg: float, y_deg: float = 0.0, x_deg: float = 0.0) -> np.ndarray:
    """3×3 rotation Rz·Ry·Rx; column k is the blob's k-th local axis in the body frame."""
    z, y, x = np.deg2rad([z_deg, y_deg, x_deg])
    rz = np.array([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Blob:
    """A smoothly deformed ellipsoid (an organ) in body millimetres.

    ``bend`` shifts the local y axis by ``bend * (u_x / a_x)²`` mm (a banana shape);
    ``taper`` grows the y/z semi-axes along local x by ``1 + taper * u_x / a_x``; ``waves``
    (frequencies [K, 3], phases [K], amplitudes [K]) wobble the surface radius.
    """

    center: np.ndarray
    semi_axes: np.ndarray
    rotation: np.ndarray
    wave_freqs: np.ndarray
    wave_phases: np.ndarray
    wave_amps: np.ndarray
    bend: float = 0.0
    taper: float = 0.0

    def extent(self) -> float:
        """Radius in mm of a sphere around ``center`` that surely holds the blob."""
        grow = 1.0 + abs(self.taper)
        return float(self.semi_axes.max() * grow * (1.0 + self.wave_amps.sum()) + abs(self.bend)) + 2.0

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Boolean mask [nx, ny, nz] for body coordinates x [nx], y [ny], z [nz] (mm)."""
        d = (x[:, None, None] - self.center[0], y[None, :, None] - self.center[1], z[None, None, :] - self.center[2])
        r = self.rotation
        u = [d[0] * r[0, k] + d[1] * r[1, k] + d[2] * r[2, k] for k in range(3)]
        qx = u[0] / self.semi_axes[0]
        scale = np.clip(1.0 + self.taper * qx, 0.3, None)
        qy = (u[1] - self.bend * qx**2) / (self.semi_axes[1] * scale)
        qz = u[2] / (self.semi_axes[2] * scale)
        radius = np.sqrt(qx**2 + qy**2 + qz**2)
        wobble = np.zeros_like(radius)
        for f, phase, amp in zip(self.wave_freqs, self.wave_phases, self.wave_amps):
            wobble += amp * np.cos(2 * np.pi * (f[0] * qx + f[1] * qy + f[2] * qz) + phase)
        return radius < 1.0 + wobble


def _random_blob(
    rng: np.random.Generator,
    center: tuple[float, float, float],
    semi_axes: tuple[float, float, float],
    angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    *,
    bend: float = 0.0,
    taper: float = 0.0,
    waves: int = 4,
) -> Blob:
    directions = rng.normal(size=(waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return Blob(
        center=np.asarray(center, dtype=np.float64),
        semi_axes=np.asarray(semi_axes, dtype=np.float64),
        rotation=_rotation(*angles_deg),
        wave_freqs=directions * rng.uniform(0.3, 0.9, size=(waves, 1)),
        wave_phases=rng.uniform(0, 2 * np.pi, size=waves),
        wave_amps=rng.uniform(0.02, 0.06, size=waves),
        bend=bend,
        taper=taper,
    )


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float, power: float = 2.0) -> np.ndarray:
    """2D mask [nx, ny] of a (super)ellipse in the axial plane."""
    return (np.abs((x[:, None] - cx) / ax) ** power + np.abs((y[None, :] - cy) / ay) ** power) <= 1.0


def _smooth_field(rng: np.random.Generator, axes: list[np.ndarray], terms: int, wavelength_mm: tuple[float, float]) -> np.ndarray:
    """Smooth random field in about [-1, 1], shape [nx, ny, nz]: sum of separable cosine products."""
    field = np.zeros([len(a) for a in axes], dtype=np.float32)
    for _ in range(terms):
        factors = []
        for a in axes:
            k = 2 * np.pi / rng.uniform(*wavelength_mm)
            factors.append(np.cos(k * a + rng.uniform(0, 2 * np.pi)).astype(np.float32))
        field += factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :]
    return field / max(terms, 1) ** 0.5


# ----------------------------------------------------------------------------- one case


@dataclass(frozen=True)
class Grid:
    """The canonical RAS voxel grid of one case: shape, spacing (mm), world origin of voxel 0."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: np.ndarray
    body_offset: np.ndarray  # world position of the body frame's origin

    def body_axes(self) -> list[np.ndarray]:
        """Body-frame coordinates (mm) of the voxel centres along each axis."""
        return [
            self.origin[i] - self.body_offset[i] + self.spacing[i] * np.arange(self.shape[i], dtype=np.float64)
            for i in range(3)
        ]

    def ras_affine(self) -> np.ndarray:
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine


def _sample_grid(rng: np.random.Generator, max_voxels: int) -> Grid:
    """In-plane 0.7–1.0 mm, slice 1.5–5 mm; coarser where the voxel budget demands it."""
    in_plane = round(float(rng.uniform(0.7, 1.0)), 4)
    slice_index = int(rng.integers(len(SLICE_SPACINGS_MM)))
    fov = np.array([*FIELD_OF_VIEW_XY_MM, rng.uniform(114.0, 144.0)])
    while True:
        spacing = (in_plane, in_plane, SLICE_SPACINGS_MM[slice_index])
        shape = tuple(int(math.ceil(f / s)) for f, s in zip(fov, spacing))
        if math.prod(shape) <= max_voxels:
            break
        if slice_index < len(SLICE_SPACINGS_MM) - 1:
            slice_index += 1
        else:  # only the 'tiny' budget gets here: coarsen in-plane too
            in_plane = round(in_plane * 1.1, 4)
    body_offset = np.array([rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-600, -200)])
    origin = body_offset - fov / 2 + np.asarray(spacing) / 2 + rng.uniform(-5, 5, size=3)
    return Grid(shape=shape, spacing=spacing, origin=origin, body_offset=body_offset)


@dataclass
class RenderedCase:
    """One rendered phantom case on its canonical RAS grid.

    ``hu`` int16 [X, Y, Z] in Hounsfield units; ``organs`` uint8 [X, Y, Z] phantom codes
    (LIVER, SPLEEN, ...); ``tumour`` bool [X, Y, Z] (always inside an organ).
    """

    grid: Grid
    hu: np.ndarray
    organs: np.ndarray
    tumour: np.ndarray


def render_case(rng: np.random.Generator, max_voxels: int, tumour_organs: tuple[int, ...] = ()) -> RenderedCase:
    """Draw one random abdomen and render it; ``tumour_organs`` get one small tumour each."""
    grid = _sample_grid(rng, max_voxels)
    xs, ys, zs = grid.body_axes()
    shape = grid.shape

    # Body wall: superellipse outline, fat layer, muscle ring, cavity (all extruded along z).
    bx, by = rng.uniform(62, 70), rng.uniform(47, 55)
    fat_mm, wall_mm = rng.uniform(5, 10), rng.uniform(3, 5)
    body2d = _ellipse(xs, ys, 0, 0, bx, by, 2.3)
    inner2d = _ellipse(xs, ys, 0, 0, bx - fat_mm, by - fat_mm, 2.3)
    cavity2d = _ellipse(xs, ys, 0, 0, bx - fat_mm - wall_mm, by - fat_mm - wall_mm, 2.3)

    hu_fat, hu_muscle = rng.uniform(-110, -90), rng.uniform(45, 55)
    hu2d = np.full(shape[:2], -1000.0, dtype=np.float32)
    hu2d[body2d] = hu_fat
    hu2d[inner2d] = hu_muscle
    hu2d[cavity2d] = rng.uniform(-90, -70)  # visceral fat

    # Spine: vertebral body, spinal canal, spinous process; muscles beside it; vessels in front.
    spine_y = -by + rng.uniform(22, 26)
    vx, vy = rng.uniform(9, 11), rng.uniform(8, 10)
    paraspinal = _ellipse(xs, ys, 15, spine_y - 14, 10, 8) | _ellipse(xs, ys, -15, spine_y - 14, 10, 8)
    psoas = _ellipse(xs, ys, vx + 7, spine_y + 2, 6, 6) | _ellipse(xs, ys, -vx - 7, spine_y + 2, 6, 6)
    hu2d[(paraspinal | psoas) & body2d] = hu_muscle
    vertebra = _ellipse(xs, ys, 0, spine_y, vx, vy)
    vertebra_core = _ellipse(xs, ys, 0, spine_y, vx - 1.5, vy - 1.5)
    spinous = _ellipse(xs, ys, 0, spine_y - vy - 12, 3, 6)
    canal = _ellipse(xs, ys, 0, spine_y - vy - 4, 4, 4)
    hu2d[vertebra | spinous] = rng.uniform(650, 700)  # cortical bone
    hu2d[vertebra_core] = rng.uniform(400, 480)  # cancellous bone
    hu2d[canal] = rng.uniform(10, 20)
    aorta_x, aorta_r = -rng.uniform(3, 7), rng.uniform(5, 6.5)
    aorta2d = _ellipse(xs, ys, aorta_x, spine_y + vy + 7, aorta_r, aorta_r)
    ivc2d = _ellipse(xs, ys, rng.uniform(12, 16), spine_y + vy + 6, 6, 5) & ~aorta2d

    hu = np.empty(shape, dtype=np.float32)
    hu[:] = hu2d[:, :, None]
    disc_period, disc_phase = rng.uniform(11, 14), rng.uniform(0, 14)
    disc_z = ((zs - disc_phase) % disc_period) < 3.0
    hu[vertebra_core[:, :, None] & disc_z[None, None, :]] = rng.uniform(80, 100)

    # Bowel loops in the anterior cavity, painted before the organs (organs take precedence).
    for _ in range(int(rng.integers(5, 10))):
        bowel = _random_blob(
            rng,
            (rng.uniform(-40, 40), rng.uniform(-5, 35), rng.uniform(-60, 5)),
            tuple(rng.uniform(7, 13, size=3)),
            (rng.uniform(0, 180), 0, 0),
            waves=2,
        )
        _paint(hu, bowel, xs, ys, zs, cavity2d, rng.uniform(10, 40))

    organs = np.zeros(shape, dtype=np.uint8)
    organs[aorta2d[:, :, None] & np.ones(shape[2], dtype=bool)] = AORTA
    organs[ivc2d[:, :, None] & np.ones(shape[2], dtype=bool)] = IVC

    # Organs in paint order: later ones win where shapes touch (kidney notches the liver).
    blobs = {
        LIVER: _random_blob(
            rng,
            (rng.uniform(20, 28), rng.uniform(-2, 6), rng.uniform(26, 34)),
            (rng.uniform(27, 33), rng.uniform(26, 32), rng.uniform(28, 34)),
            (rng.uniform(-10, 10), rng.uniform(-5, 5), 0),
            taper=rng.uniform(0.25, 0.45),  # the thick right lobe
        ),
        SPLEEN: _random_blob(
            rng,
            (-rng.uniform(38, 46), rng.uniform(-22, -14), rng.uniform(14, 26)),
            (rng.uniform(8, 11), rng.uniform(17, 23), rng.uniform(18, 24)),
            (rng.uniform(25, 45), 0, rng.uniform(-10, 10)),
        ),
        PANCREAS: _random_blob(
            rng,
            (-rng.uniform(4, 12), rng.uniform(6, 10), rng.uniform(-8, 0)),
            (rng.uniform(30, 36), rng.uniform(5, 7), rng.uniform(6, 8)),
            (rng.uniform(-10, 10), rng.uniform(8, 18), 0),  # tail rises toward the splenic hilum
            bend=-rng.uniform(6, 12),  # head and tail curve back around the spine
            taper=rng.uniform(0.3, 0.5),  # the head (patient's right) is thicker
        ),
        RIGHT_KIDNEY: _random_blob(
            rng,
            (rng.uniform(24, 30), rng.uniform(-20, -14), rng.uniform(-16, -8)),
            (rng.uniform(9, 11), rng.uniform(7, 9), rng.uniform(21, 26)),
            (rng.uniform(20, 35), -rng.uniform(8, 15), 0),  # upper pole tilts medially
        ),
        LEFT_KIDNEY: _random_blob(
            rng,
            (-rng.uniform(24, 30), rng.uniform(-20, -14), rng.uniform(-10, -2)),
            (rng.uniform(9, 11), rng.uniform(7, 9), rng.uniform(21, 26)),
            (-rng.uniform(20, 35), rng.uniform(8, 15), 0),
        ),
    }
    for code, blob in blobs.items():
        _paint(organs, blob, xs, ys, zs, cavity2d, code)

    # Liver and spleen deliberately close in HU: only shape and place separate them.
    hu_liver = rng.uniform(55, 66)
    organ_hu = np.zeros(8, dtype=np.float32)
    organ_hu[[LIVER, SPLEEN, LEFT_KIDNEY, RIGHT_KIDNEY, PANCREAS, AORTA, IVC]] = [
        hu_liver,
        hu_liver - rng.uniform(0, 10),
        rng.uniform(140, 170),
        rng.uniform(140, 170),
        rng.uniform(35, 45),
        rng.uniform(160, 200),
        rng.uniform(90, 120),
    ]
    hu = np.where(organs > 0, organ_hu[organs], hu)

    tumour = np.zeros(shape, dtype=bool)
    tumour_hu = {  # lesions are darker than their organ
        LIVER: -rng.uniform(25, 40),
        LEFT_KIDNEY: -rng.uniform(50, 80),
        RIGHT_KIDNEY: -rng.uniform(50, 80),
        PANCREAS: -rng.uniform(15, 25),
    }
    for code in tumour_organs:
        lesion = _random_tumour(rng, organs == code, grid.spacing)
        tumour |= lesion
        hu[lesion] = organ_hu[code] + tumour_hu[code]

    # Texture, partial-volume blur, bias (gain on attenuation, smooth offset) and noise.
    hu += 4.0 * _smooth_field(rng, [xs, ys, zs], 3, (15.0, 40.0))
    hu = ndimage.gaussian_filter(hu, sigma=(0.6, 0.6, 0.3), mode="nearest")
    gain = 1.0 + 0.01 * _smooth_field(rng, [xs, ys, zs], 2, (250.0, 500.0))
    offset = 4.0 * _smooth_field(rng, [xs, ys, zs], 2, (250.0, 500.0))
    hu = (hu + 1000.0) * gain - 1000.0 + offset
    hu += rng.standard_normal(shape, dtype=np.float32) * np.float32(rng.uniform(8, 15))
    hu_int = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return RenderedCase(grid=grid, hu=hu_int, organs=organs, tumour=tumour)


def _paint(
    target: np.ndarray, blob: Blob, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, cavity2d: np.ndarray, value: float
) -> None:
    """Set ``value`` inside the blob (and inside the abdominal cavity), touching only its box."""
    box = []
    for axis, coords in enumerate((xs, ys, zs)):
        lo, hi = blob.center[axis] - blob.extent(), blob.center[axis] + blob.extent()
        idx = np.flatnonzero((coords >= lo) & (coords <= hi))
        if idx.size == 0:
            return
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    mask = blob.inside(xs[box[0]], ys[box[1]], zs[box[2]]) & cavity2d[box[0], box[1], None]
    target[tuple(box)][mask] = value


def _random_tumour(rng: np.random.Generator, organ: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """A sphere of radius 3–7 mm centred on a random voxel of ``organ``, clipped to the organ."""
    lesion = np.zeros(organ.shape, dtype=bool)
    voxels = np.flatnonzero(organ)
    if voxels.size == 0:
        return lesion
    centre = np.unravel_index(voxels[int(rng.integers(voxels.size))], organ.shape)
    radius = rng.uniform(3.0, 7.0)
    box, axes = [], []
    for c, s, n in zip(centre, spacing, organ.shape):
        half = int(math.ceil(radius / s))
        lo, hi = max(c - half, 0), min(c + half + 1, n)
        box.append(slice(lo, hi))
        axes.append((np.arange(lo, hi) - c) * s)
    sphere = (axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2) <= radius**2
    lesion[tuple(box)] = sphere & organ[tuple(box)]
    return lesion


# ----------------------------------------------------------------------------- writing


def _nifti_bytes(array: np.ndarray, affine: np.ndarray, *, sform_code: int, qform_code: int) -> bytes:
    """Gzipped NIfTI-1 bytes with no time stamp or file name inside, so a seed gives the same bytes."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    image.set_sform(affine, code=sform_code)
    image.set_qform(affine if qform_code else None, code=qform_code)
    return gzip.compress(image.to_bytes(), compresslevel=4, mtime=0)


def _write_pair(
    case: RenderedCase,
    label: np.ndarray,
    axcodes: tuple[str, str, str],
    image_path: Path,
    label_path: Path,
    *,
    zero_origin: bool = False,
) -> None:
    """Store image (int16 HU) and label (uint8) in the voxel order ``axcodes``."""
    ras_affine = case.grid.ras_affine()
    orientations = nib.orientations
    transform = orientations.ornt_transform(orientations.axcodes2ornt(("R", "A", "S")), orientations.axcodes2ornt(axcodes))
    affine = ras_affine @ orientations.inv_ornt_aff(transform, case.hu.shape)
    hu = np.ascontiguousarray(orientations.apply_orientation(case.hu, transform))
    label = np.ascontiguousarray(orientations.apply_orientation(label.astype(np.uint8), transform))
    if zero_origin:  # KiTS19 files put voxel 0 at the world origin
        affine[:3, 3] = 0.0
    # KiTS19 stores an 'aligned' sform only; the MSD/BTCV files carry scanner qform and sform.
    codes = {"sform_code": 2, "qform_code": 0} if zero_origin else {"sform_code": 1, "qform_code": 1}
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    image_path.write_bytes(_nifti_bytes(hu, affine, **codes))
    label_path.write_bytes(_nifti_bytes(label, affine, **codes))


def _label_for(dataset_dir: str, case: RenderedCase) -> np.ndarray:
    """The dataset's own label volume: only that dataset's organs, in its own ids."""
    organs, tumour = case.organs, case.tumour
    label = np.zeros(organs.shape, dtype=np.uint8)
    if dataset_dir == KITS19_DIR:  # 1 kidney (both sides), 2 tumour
        kidney = (organs == LEFT_KIDNEY) | (organs == RIGHT_KIDNEY)
        label[kidney] = 1
        label[kidney & tumour] = 2
    elif dataset_dir in (LIVER_DIR, PANCREAS_DIR):  # 1 organ, 2 cancer
        organ = organs == (LIVER if dataset_dir == LIVER_DIR else PANCREAS)
        label[organ] = 1
        label[organ & tumour] = 2
    elif dataset_dir == SPLEEN_DIR:
        label[organs == SPLEEN] = 1
    elif dataset_dir == BTCV_DIR:
        for code, btcv_id in BTCV_LABELS.items():
            label[organs == code] = btcv_id
    return label


def _tumour_organs(dataset_dir: str, rng: np.random.Generator) -> tuple[int, ...]:
    if dataset_dir == KITS19_DIR:  # every KiTS19 case has a renal tumour
        return (RIGHT_KIDNEY if rng.random() < 0.5 else LEFT_KIDNEY,)
    if dataset_dir == LIVER_DIR:
        return (LIVER,) * int(rng.choice([0, 1, 2], p=[0.15, 0.55, 0.30]))
    if dataset_dir == PANCREAS_DIR:
        return (PANCREAS,) if rng.random() < 0.85 else ()
    return ()


def _case_names(dataset_dir: str, count: int) -> list[str]:
    """File stems as the real datasets number them (gaps included, as in MSD and BTCV)."""
    if dataset_dir == KITS19_DIR:
        return [f"case_{i:05d}" for i in range(count)]
    if dataset_dir == LIVER_DIR:
        return [f"liver_{i}" for i in range(count)]
    if dataset_dir == PANCREAS_DIR:
        return [f"pancreas_{1 + i + i // 2:03d}" for i in range(count)]
    if dataset_dir == SPLEEN_DIR:
        return [f"spleen_{2 + i + i // 3}" for i in range(count)]
    return [f"{i + 1 if i < 10 else i + 11:04d}" for i in range(count)]  # BTCV: 0001–0010, 0021–0040


_MSD_DESCRIPTION = {
    LIVER_DIR: ("Liver", "Liver and tumour segmentation", {"0": "background", "1": "liver", "2": "cancer"}),
    PANCREAS_DIR: ("Pancreas", "Pancreas and cancer segmentation", {"0": "background", "1": "pancreas", "2": "cancer"}),
    SPLEEN_DIR: ("Spleen", "Spleen segmentation", {"0": "background", "1": "spleen"}),
}


def _msd_dataset_json(dataset_dir: str, names: list[str]) -> dict:
    name, description, labels = _MSD_DESCRIPTION[dataset_dir]
    return {
        "name": name,
        "description": f"{description} (tctseg synthetic phantom imitating MSD {dataset_dir})",
        "reference": "tctseg synthetic abdominal phantom",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": labels,
        "numTraining": len(names),
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names],
        "test": [],
    }


_README = """# tctseg synthetic abdominal phantom

Synthetic abdominal CT (HU, int16) written exactly in the public datasets' own layouts, so it
enters tctseg through the same converters as the real downloads. Every image contains all
organs; every label file holds only its own dataset's organs (partially labeled data).

| folder | imitates | label ids |
|---|---|---|
| `kits19/case_XXXXX/{{imaging,segmentation}}.nii.gz` | KiTS19 (voxel order I, P, L; slice axis first) | 1 kidney (both sides), 2 tumour |
| `Task03_Liver/` | MSD Task03_Liver (`dataset.json`, `imagesTr/`, `labelsTr/`) | 1 liver, 2 cancer |
| `Task07_Pancreas/` | MSD Task07_Pancreas | 1 pancreas, 2 cancer |
| `Task09_Spleen/` | MSD Task09_Spleen | 1 spleen |
| `btcv/RawData/Training/{{img,label}}/` | BTCV (Synapse multi-organ), fully labeled test set | 1 spleen, 2 right kidney, 3 left kidney, 6 liver, 8 aorta, 9 IVC, 11 pancreas |

MSD and BTCV cases alternate between RAS and LPS voxel order; spacings vary (in-plane
0.7–1.0 mm, slices 1.5–5 mm; size `tiny` coarsens them to stay under its voxel budget). Size `{size}`, seed {seed}: {counts}.
Written by `tctseg phantom`; regenerate with the same size and seed to get the same data.
"""


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> list[str]:
    """Refuse what may not be written over; returns the files of the phantom already there.

    A non-empty folder is written into only when it carries the :data:`MARKER` of an earlier
    phantom and ``overwrite`` is given, and then only when every file in the phantom's own
    entries (its dataset folders, README.md) is one that phantom wrote.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out_dir}: cannot create the folder ({e.strerror or e})") from None
    for stale in out_dir.glob(f"{_PARTIAL_PREFIX}*"):  # left by a killed run: never complete
        shutil.rmtree(stale, ignore_errors=True)
    if not any(out_dir.iterdir()):
        return []
    earlier = _marked_files(out_dir)
    if earlier is None:
        raise OutputError(
            f"{out_dir}: folder is not empty and holds no phantom tctseg wrote (no {MARKER}); choose an empty or new "
            "folder (--overwrite replaces only a phantom tctseg wrote)"
        )
    if not overwrite:
        raise OutputError(f"{out_dir}: holds a phantom already; pass --overwrite to replace it")
    for entry in (*DATASET_DIRS, README):
        for path in _files_under(out_dir / entry):
            name = path.relative_to(out_dir).as_posix()
            if name not in earlier or path.is_symlink():
                raise OutputError(
                    f"{out_dir}: {name} is not a file the phantom there wrote; move it out of the folder, or choose "
                    "an empty or new folder"
                )
    return sorted(earlier)


def _marked_files(out_dir: Path) -> set[str] | None:
    """The files the phantom in ``out_dir`` wrote, from its marker; None without a (readable) marker."""
    try:
        record = json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return set(files)


def _files_under(path: Path) -> list[Path]:
    """Every file (and link) at or below ``path``, without following links."""
    if path.is_symlink() or path.is_file():
        return [path]
    if not path.is_dir():
        return []
    found = []
    for root, dirs, files in os.walk(path):
        found += [Path(root) / f for f in files]
        found += [Path(root) / d for d in dirs if (Path(root) / d).is_symlink()]  # os.walk does not enter them
    return found


def _write_marker(out_dir: Path, size: str, seed: int, files: list[str]) -> None:
    record = {"written_by": "tctseg phantom", "size": size, "seed": seed, "files": sorted(set(files))}
    tmp = out_dir / f"{MARKER}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / MARKER)


def write_phantom(out_dir: str | Path, size: str = "demo", seed: int = 0, *, overwrite: bool = False) -> dict[str, int]:
    """Write the phantom datasets under ``out_dir``; return {dataset folder: number of cases}.

    Everything is written into a hidden staging folder first and each dataset folder is
    moved into place only when complete; ``out_dir/.tctseg-phantom.json`` (:data:`MARKER`)
    records the size, seed and every file written. A non-empty ``out_dir`` is refused unless
    it holds such a phantom and ``overwrite`` is given; then only the phantom's own folders
    and README.md are replaced, and only when they hold nothing but the files it wrote.
    """
    if size not in SIZES:
        raise ConfigError(f"phantom size {size!r}: expected one of {', '.join(SIZES)}")
    spec = SIZES[size]
    out_dir = Path(out_dir)
    earlier = _prepare_out_dir(out_dir, overwrite)
    staging = out_dir / f"{_PARTIAL_PREFIX}{os.getpid()}"
    try:
        staging.mkdir()
    except OSError as e:
        raise OutputError(f"{out_dir}: cannot write into the folder ({e.strerror or e})") from None
    counts = {**spec.train_cases, BTCV_DIR: spec.test_cases}
    try:
        for dataset_index, dataset_dir in enumerate(DATASET_DIRS):
            names = _case_names(dataset_dir, counts[dataset_dir])
            for case_index, name in enumerate(names):
                # One independent stream per case: a case does not depend on the size chosen.
                rng = np.random.default_rng(np.random.SeedSequence([seed, dataset_index, case_index]))
                case = render_case(rng, spec.max_voxels, _tumour_organs(dataset_dir, rng))
                label = _label_for(dataset_dir, case)
                root = staging / dataset_dir
                if dataset_dir == KITS19_DIR:
                    image_path, label_path = root / name / "imaging.nii.gz", root / name / "segmentation.nii.gz"
                    _write_pair(case, label, ("I", "P", "L"), image_path, label_path, zero_origin=True)
                    continue
                axcodes = ("R", "A", "S") if (case_index + dataset_index) % 2 == 0 else ("L", "P", "S")
                if dataset_dir == BTCV_DIR:
                    base = root / "RawData" / "Training"
                    _write_pair(case, label, axcodes, base / "img" / f"img{name}.nii.gz", base / "label" / f"label{name}.nii.gz")
                else:
                    _write_pair(case, label, axcodes, root / "imagesTr" / f"{name}.nii.gz", root / "labelsTr" / f"{name}.nii.gz")
            if dataset_dir in _MSD_DESCRIPTION:
                (staging / dataset_dir / "imagesTs").mkdir()
                text = json.dumps(_msd_dataset_json(dataset_dir, names), indent=4)
                (staging / dataset_dir / "dataset.json").write_text(text + "\n", encoding="utf-8")
        counts_text = ", ".join(f"{d} {n}" for d, n in counts.items())
        (staging / README).write_text(_README.format(size=size, seed=seed, counts=counts_text), encoding="utf-8")
        written = [p.relative_to(staging).as_posix() for p in _files_under(staging)]
        # marked before anything moves in, listing the earlier phantom's files too: a run killed
        # while replacing leaves a folder whose every phantom file the marker still names
        _write_marker(out_dir, size, seed, earlier + written)
        for entry in (*DATASET_DIRS, README):
            target = out_dir / entry
            if target.is_dir():
                shutil.rmtree(target)  # holds only files the earlier phantom wrote (_prepare_out_dir)
            elif target.exists():
                target.unlink()
            os.replace(staging / entry, target)
        _write_marker(out_dir, size, seed, written)
    except OSError as e:  # e.g. a full disk: nothing half-written is left in out_dir
        raise OutputError(f"{out_dir}: cannot write the phantom ({e.strerror or e}: {e.filename})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts
