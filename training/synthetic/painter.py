"""Vectorised evaluation of the phantom's tissues at arbitrary points ("painting").

Points are mapped to the local spine frame ``(s, a, l)`` (:class:`~training.synthetic.anatomy.SpineFrame`),
then structures are painted in anatomical order, each only on the subset of points that can lie
inside it (found from cheap bounds on the per-s tables). Each structure is a signed distance
``d`` (mm, negative inside); it blends its signal in with weight ``clip(0.5 − d / EDGE_MM, 0, 1)``,
which gives sub-voxel soft edges (partial volume at the sub-millimetre scale; the scanner code adds
slice-thickness partial volume by supersampling). The signal per tissue is precomputed per
contrast, so painting is a handful of numpy passes per structure and the same geometry can feed
several contrasts at once (``signals`` has one column per contrast).

Painting order (later wins): body outline (skin, subcutaneous fat, muscle), head (scalp, skull
vault, clivus and skull-base floor, brain, CSF, cisterna magna, nasopharynx), neck airway and
oesophagus, trunk cavity (lungs with apical domes / bowel with gas and fat, mediastinum, heart,
aorta, IVC, kidneys, psoas), posterior elements (foramina with fat, exiting root and foraminal
stenosis; pedicles, laminae, spinous and transverse processes / sacral alae, facet columns with
joint spaces, C1 ring), canal contents (epidural fat, ligamentum flavum, posterior longitudinal
ligament, dural sac/CSF, cauda equina, stenosis intrusions, herniations, epidural tumour, cord),
discs (annulus, nucleus with degeneration, clefts, vacuum on CT), vertebral bodies (cortex,
marrow, osteophytes, basivertebral vein, dens, Modic changes, fracture oedema, metastases,
haemangiomas, Schmorl nodes), iliac bones, ribs, texture.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from training.synthetic.anatomy import (
    C1, C2, CERVICAL, COCCYX, LUMBAR, P_CANAL_A, P_CANAL_L, P_FACET_A, P_FACET_L, P_LAMINA, P_PED_L, P_PED_S,
    P_SP_LEN, P_SP_S, P_SP_TILT, P_TP_LEN, S1, SACRAL, THORACIC, Discs, Segments, SpineFrame, Tables,
)
from training.synthetic.tissue import Tissue

#: Width of the soft tissue boundary (mm).
EDGE_MM = 0.7
_CHUNK = 1 << 16


@dataclass
class Lesion:
    """A focal lesion painted inside a vertebral body (local frame, mm)."""

    segment: int
    centre: tuple[float, float, float]  # (s, a, l)
    radii: tuple[float, float, float]
    tissue: Tissue


@dataclass
class Scene:
    """Everything the painter needs besides the contrast (built once per phantom)."""

    frame: SpineFrame
    tables: Tables
    segments: Segments
    discs: Discs
    lesions: list[Lesion]  # metastases, Schmorl nodes (tissue NUCLEUS), etc.
    schmorl: list[Lesion]
    herniations: list[tuple[int, float, float, float, float, bool]]  # disc, s, a-depth, l, s-semi, extrusion
    modic: np.ndarray  # (n_seg, 2, 2): [top/bottom][type, depth mm]
    foraminal: np.ndarray  # (n_disc, 2) severity 0..3, [left, right]
    disc_blur: np.ndarray  # (n_disc,) nucleus edge width mm
    disc_cleft: np.ndarray  # (n_disc,) bool intranuclear cleft
    oedema: np.ndarray  # (n_seg,) fracture oedema weight 0..1
    posterior_tumour: np.ndarray  # (n_seg,) posterior elements replaced by tumour
    noise: np.ndarray  # (64, 64, 64) float32 fine texture volume (unit variance, 1-voxel correlation)
    coarse_noise: np.ndarray  # (128, 128, 128) float32 smooth texture volume (4-voxel correlation)
    scale: float
    aorta_radius: float
    conus_s: float  # s of the conus medullaris tip
    disc_bulge: np.ndarray  # (n_disc,) circumferential annular bulge (mm)
    osteophytes: np.ndarray  # (n_seg, 2) anterior osteophyte length at the top / bottom endplate (mm)
    nucleus_row0: int  # signal-table row of disc 0's nucleus (one row per disc follows)
    marrow_row0: int  # signal-table row of segment 0's marrow (one row per segment follows)


def _ellipse_distance(x: np.ndarray, y: np.ndarray, rx: np.ndarray | float, ry: np.ndarray | float) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipse centred at 0 (along the ray)."""
    rx = np.maximum(rx, 1e-3)
    ry = np.maximum(ry, 1e-3)
    norm = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    r = np.sqrt(x * x + y * y)
    return r - r / np.maximum(norm, 1e-3)


class _Canvas:
    """Signal (C, n) — one contiguous row per contrast — and dominant-tissue label (n,) of a chunk."""

    def __init__(self, n: int, signals: np.ndarray) -> None:
        self.signals = signals  # (rows, C)
        self.columns = [np.ascontiguousarray(signals[:, c]) for c in range(signals.shape[1])]
        self.sig = np.repeat(signals[Tissue.AIR][:, None], n, axis=1)
        self.label = np.zeros(n, dtype=np.int8)

    def fill(self, mask: np.ndarray, tissue: Tissue | int) -> None:
        """Set points fully to ``tissue`` (no blending)."""
        for c, column in enumerate(self.columns):
            self.sig[c, mask] = column[int(tissue)]
        self.label[mask] = int(tissue)

    def paint(self, idx: np.ndarray, d: np.ndarray, tissue: Tissue | int, edge: float | np.ndarray = EDGE_MM,
              rows: np.ndarray | None = None, strength: float | np.ndarray = 1.0) -> None:
        """Blend ``tissue`` into points ``idx`` with signed distance ``d`` (mm).

        ``rows`` optionally gives per-point row indices into the signal table (per-disc nucleus,
        per-segment marrow variants) instead of the tissue's own row.
        """
        keep = d < 0.5 * edge
        if not keep.any():
            return
        if not keep.all():
            idx, d = idx[keep], d[keep]
            rows = None if rows is None else rows[keep]
            if isinstance(edge, np.ndarray):
                edge = edge[keep]
            if isinstance(strength, np.ndarray):
                strength = strength[keep]
        w = np.minimum(0.5 - d / edge, 1.0)
        if not isinstance(strength, float) or strength != 1.0:
            w = w * strength
        for c, column in enumerate(self.columns):
            target = column[int(tissue)] if rows is None else column.take(rows)
            line = self.sig[c]
            current = line.take(idx)
            current += w * (target - current)
            line[idx] = current
        self.label[idx[w >= 0.5]] = int(tissue)


class Painter:
    """Renders a :class:`Scene` for given per-tissue signals."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        seg = scene.segments
        self.params = seg.params.astype(np.float32)
        self.seg_f = {name: getattr(seg, name).astype(np.float32) for name in (
            "centre", "top", "bottom", "height", "depth", "width", "shift", "concavity_top", "concavity_bottom", "waist")}
        self.kind = seg.kind.astype(np.int8)
        self.disc_centre = scene.discs.centre.astype(np.float32)
        self.disc_height = scene.discs.height.astype(np.float32)
        idx = {name: i for i, name in enumerate(seg.names)}
        self.index = idx
        self.s_skull = float(seg.centre[0] - 11.0 * scene.scale)
        self.s_t1 = float(seg.top[idx["T1"]])
        self.s_diaphragm = float(seg.centre[idx["T12"]])
        self.s_aorta = (float(seg.centre[idx["T4"]]), float(seg.centre[idx["L4"]]))
        self.s_ivc = (float(seg.centre[idx["T10"]]), float(seg.centre[idx["L4"]]))
        self.s_psoas = (float(seg.top[idx["T12"]]), float(seg.bottom[idx["S1"]]))
        self.s_airway = (float(seg.centre[0] - 30.0), float(seg.centre[idx["T4"]]))
        self.s_heart = float(seg.centre[idx["T8"]])
        self.s_liver_bottom = float(seg.centre[idx["L3"]])
        self.s_scapula = (float(seg.centre[idx["T2"]]), float(seg.centre[idx["T8"]]))
        self.s_vertebral_artery = (float(seg.centre[0]), float(seg.top[idx["C7"]]))
        self.s_sternum = (float(seg.centre[idx["T2"]]), float(seg.centre[idx["T10"]]))
        self.s_kidney = float(seg.centre[idx["L1"]])
        self._bounds(scene)
        s1 = idx["S1"]
        self.s_crest = float(seg.centre[idx["L5"] if "L6" not in idx else idx["L6"]] - 0.2 * seg.height[s1])
        self.s_pelvis_bottom = float(seg.centre[idx["S3"]] + 25.0 * scene.scale)
        ala = float(self.params[s1, P_CANAL_L] + self.params[s1, P_TP_LEN])
        self.ilium_joint = (float(seg.shift[s1] - 0.1 * seg.depth[s1] - 8.0 * scene.scale), ala + 2.0)
        self.ilium_medial = ala - 10.0
        ribs = [i for i, k in enumerate(seg.kind) if k == THORACIC]
        self.rib_segments = np.array(ribs)
        self.rib_start = np.array([seg.top[i] - 0.15 * seg.height[i] for i in ribs], dtype=np.float32)
        self.rib_number = np.arange(1, len(ribs) + 1)

    def _bounds(self, scene: Scene) -> None:
        """Per-s bounding limits of the spinal structures and ribs (cheap culling of points)."""
        seg, t, frame = scene.segments, scene.tables, scene.frame
        v = t.seg_owner.astype(np.intp)
        above = np.maximum(v - 1, 0)
        par = self.params
        canal_c = seg.shift - seg.depth / 2 - par[:, P_CANAL_A]
        back = canal_c - par[:, P_CANAL_A] - par[:, P_LAMINA] - 1.05 * par[:, P_SP_LEN] - 8.0
        lateral = np.maximum(seg.width / 2, par[:, P_CANAL_L] + par[:, P_TP_LEN]) + 10.0
        lateral[0] = 60.0 * scene.scale
        self.spine_back = np.minimum(back[v], back[above]).astype(np.float32)
        self.spine_front = (t.shift + t.depth / 2 + 10.0).astype(np.float32)
        self.spine_lateral = np.maximum(lateral[v], lateral[above]).astype(np.float32)
        # Sacrum/coccyx end the spine; the head starts above C1.
        outside = (frame.s < seg.top[0] - 25.0) | (frame.s > seg.bottom[-1] + 10.0)
        self.spine_back[outside] = 1e4
        # The posterior elements lie behind the body's back wall, except the sacral alae / C1 masses.
        self.posterior_front = np.where(seg.kind[v] >= S1, t.shift + 0.35 * t.depth + 3.0,
                                        t.shift - t.depth / 2 + 8.0).astype(np.float32)
        self.posterior_front[v <= 1] = (t.shift + t.depth / 2 + 12.0)[v <= 1]
        thoracic = np.nonzero(seg.kind == THORACIC)[0]
        s0 = seg.top[thoracic[0]] - 15.0
        s1 = seg.bottom[thoracic[-1]] + 80.0 * scene.scale
        self.rib_j = tuple(int(x) for x in frame.index_of(np.array([s0, s1], dtype=np.float32)))
        self.rib_lateral = float(np.min(seg.width[thoracic]) / 2 + 6.0)

    # ------------------------------------------------------------------ public
    def render(self, points_mm: np.ndarray, signals: np.ndarray, texture: np.ndarray,
               additive_texture: np.ndarray, labels: np.ndarray | None = None, threads: int = 1) -> np.ndarray:
        """Signals (N, C) at (N, 3) LPS points.

        Args:
            signals: (N_TISSUES + extra rows, C) per-tissue signal per contrast; rows past the
                tissues are per-disc nucleus and per-segment marrow variants (see ``SpinePhantom``).
            texture: (N_TISSUES, C) texture amplitude per tissue and contrast.
            additive_texture: (C,) bool, True where texture is added (CT, HU) rather than multiplied.
            labels: optional (N,) int8 output, filled with the dominant :class:`Tissue` per point.
            threads: worker threads over chunks of points (results are identical for any count).
        """
        points = np.asarray(points_mm, dtype=np.float32).reshape(-1, 3)
        out = np.empty((len(points), signals.shape[1]), dtype=np.float32)

        def run(start: int) -> None:
            chunk = points[start:start + _CHUNK]
            canvas = self._render_chunk(chunk, signals, texture, additive_texture)
            out[start:start + len(chunk)] = canvas.sig.T
            if labels is not None:
                labels[start:start + len(chunk)] = canvas.label

        starts = range(0, len(points), _CHUNK)
        if threads > 1 and len(starts) > 1:
            # numpy releases the GIL inside its kernels, so chunks overlap on several cores.
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(run, starts))
        else:
            for start in starts:
                run(start)
        return out

    # ------------------------------------------------------------------ internals
    def _render_chunk(self, points: np.ndarray, signals: np.ndarray, texture: np.ndarray,
                      additive: np.ndarray) -> _Canvas:
        sc = self.scene
        s, a, l = sc.frame.to_local(points)
        j = sc.frame.index_of(s)
        canvas = _Canvas(len(s), signals)
        everything = np.arange(len(s), dtype=np.int32)
        d_wall = self._body(canvas, everything, s, a, l, j)
        self._head(canvas, everything, s, a, l, j)
        self._trunk(canvas, everything, s, a, l, j, d_wall)
        al = np.abs(l)
        near = (a < self.spine_front[j]) & (a > self.spine_back[j]) & (al < self.spine_lateral[j])
        spine = everything[near]
        if len(spine):
            self._posterior(canvas, spine, s, a, l, j)
            self._canal(canvas, spine, s, a, l, j)
            self._discs(canvas, spine, s, a, l, j)
            self._bodies(canvas, spine, s, a, l, j)
        pelvis = (s > self.s_crest) & (s < self.s_pelvis_bottom) & (al > self.ilium_medial)
        if pelvis.any():
            self._ilium(canvas, everything[pelvis], s, a, l)
        ribs = (j >= self.rib_j[0]) & (j <= self.rib_j[1]) & (al > self.rib_lateral)
        if ribs.any():
            self._ribs(canvas, everything[ribs], s, a, l, j)
        self._texture(canvas, points, s, a, l, texture, additive)
        return canvas

    def _body(self, cv: _Canvas, idx: np.ndarray, s, a, l, j) -> np.ndarray:
        """Skin, subcutaneous fat and the muscle of the body wall (neck and trunk; the head ellipsoid
        takes over above the skull base). Returns the distance to the wall's inner surface (mm)."""
        t = self.scene.tables
        d = _ellipse_distance(a - t.body_a[j], l, t.body_ra[j], t.body_rl[j])
        d = np.maximum(d, (self.s_skull - 40.0 * self.scene.scale) - s)
        inner = d + 2.0 + t.fat[j]
        deep = inner < -0.75
        # Deep inside the wall every earlier layer is fully covered: assign muscle directly.
        cv.fill(deep, Tissue.MUSCLE)
        edge = ~deep & (d < 1.0)
        ie, de = idx[edge], d[edge]
        cv.paint(ie, de, Tissue.SKIN)
        cv.paint(ie, de + 2.0, Tissue.FAT)
        cv.paint(ie, inner[edge], Tissue.MUSCLE, edge=1.5)
        return inner

    def _head(self, cv: _Canvas, idx: np.ndarray, s, a, l, j) -> None:
        """Head above the foramen magnum: scalp, skull vault, skull base (clivus/occiput), brain with
        CSF spaces and the cisterna magna; the face in front of the skull base is soft tissue with the
        nasopharynx."""
        sc, t = self.scene, self.scene.tables
        k = sc.scale
        top = s < self.s_skull + 12.0 * k
        if not top.any():
            return
        idx = idx[top]
        ss, aa, ll = s[idx], a[idx], l[idx]
        j0 = int(sc.frame.index_of(np.array([self.s_skull], dtype=np.float32))[0])
        canal_a = float(t.canal_a[j0])
        centre_s, centre_a = self.s_skull - 66.0 * k, canal_a + 30.0 * k
        hs, ha, hl = 84.0 * k, 100.0 * k, 76.0 * k
        norm = np.sqrt(((ss - centre_s) / hs) ** 2 + ((aa - centre_a) / ha) ** 2 + (ll / hl) ** 2)
        radius = np.sqrt((ss - centre_s) ** 2 + (aa - centre_a) ** 2 + ll**2)
        d = radius - radius / np.maximum(norm, 1e-3)
        inside = d < 1.0
        idx, d, ss, aa, ll = idx[inside], d[inside], ss[inside], aa[inside], ll[inside]
        cv.paint(idx, d, Tissue.SKIN)
        cv.paint(idx, d + 2.0, Tissue.FAT)
        cv.paint(idx, d + 6.0, Tissue.MUSCLE, edge=1.5)
        # Skull base: the clivus rises anteriorly from the basion to the sella, then the anterior
        # cranial fossa floor runs forward over the face; the cranium lies behind / above both.
        basion_s, basion_a = self.s_skull, canal_a + float(t.canal_ra[j0]) + 2.0
        plane = (ss - basion_s) * 0.5 + (aa - basion_a) * 0.87
        along = -(ss - basion_s) * 0.87 + (aa - basion_a) * 0.5
        floor_s = basion_s - 42.0 * k * 0.87
        foramen = np.sqrt((aa - canal_a) ** 2 + ll**2) - 17.0 * k
        low = np.where(ss > self.s_skull - 30.0 * k, -foramen, -99.0)  # the foramen magnum opening
        clivus = np.maximum(np.abs(plane + 5.0 * k) - 5.0 * k, along - 45.0 * k)
        floor = np.maximum(np.abs(ss - floor_s) - 4.0 * k, -plane - 8.0 * k)
        below_cranium = np.minimum(plane + 10.0 * k, ss - floor_s + 4.0 * k)  # < 0 inside the cranium
        vault = np.maximum(d + 6.0, below_cranium + 6.0)
        bone = np.maximum(np.minimum.reduce([vault, clivus, floor]), low)
        cv.paint(idx, bone, Tissue.CORTICAL_BONE)
        cv.paint(idx, np.maximum(bone + 2.0, d + 8.5), Tissue.MARROW)
        cranium = np.maximum.reduce([d + 13.0, below_cranium, low - 2.0])
        cv.paint(idx, cranium, Tissue.CSF)
        cv.paint(idx, cranium + 2.5, Tissue.BRAIN, edge=1.2)
        # Cisterna magna behind the medulla, below the cerebellum.
        cistern = _ellipse_distance(np.sqrt((ss - (self.s_skull - 14 * k)) ** 2 + ll**2 * 0.45),
                                    aa - (canal_a - 12 * k), 11.0 * k, 7.0 * k)
        cv.paint(idx, np.maximum(cistern, cranium + 1.0), Tissue.CSF, edge=1.2)
        # Face: nasopharyngeal airway just in front of the skull base.
        face = (plane > 0.0) & (ss > floor_s + 4.0 * k)
        airway = _ellipse_distance(np.sqrt(((ss[face] - (basion_s - 25.0 * k)) / 1.6) ** 2 + ll[face] ** 2),
                                   aa[face] - (basion_a + 28.0 * k), 10.0 * k, 8.0 * k)
        cv.paint(idx[face], airway, Tissue.AIR, edge=1.0)

    def _trunk(self, cv: _Canvas, idx: np.ndarray, s, a, l, j, d_wall: np.ndarray) -> None:
        """Neck airway/oesophagus and the trunk cavity with its organs (each on its bounding box only)."""
        sc, t = self.scene, self.scene.tables
        k = sc.scale
        al = np.abs(l)
        air = (s > self.s_airway[0]) & (s < self.s_airway[1]) & (al < 30) & (a > 0) & (a < 90)
        if air.any():
            ia = idx[air]
            ss, aa, ll, jj = s[ia], a[ia], l[ia], j[ia]
            front = t.depth[jj] / 2 + t.shift[jj]
            below_larynx = np.clip((ss - (self.s_skull + 65 * k)) / 20.0, 0.0, 1.0)
            ra = 6.5 * k + 1.5 * below_larynx
            rl = (14.0 - 5.0 * below_larynx) * k
            centre = front + 4.0 * k + ra + 11.0 * k * below_larynx
            cv.paint(ia, _ellipse_distance(aa - centre, ll, ra + 2.0, rl + 2.0), Tissue.MUSCLE, edge=1.0)
            cv.paint(ia, _ellipse_distance(aa - centre, ll, ra, rl), Tissue.AIR)
            oesophagus = below_larynx > 0.5
            cv.paint(ia[oesophagus], _ellipse_distance(aa[oesophagus] - (front[oesophagus] + 6.0 * k),
                                                       ll[oesophagus] - 3.0, 4.5 * k, 8.0 * k), Tissue.MUSCLE)
        # Sternum (manubrium and body) in the anterior chest wall, T2 … T10.
        st = (np.abs(l) < 24 * k) & (a > 30 * k) & (s > self.s_sternum[0]) & (s < self.s_sternum[1])
        if st.any():
            ist, jst, sst, ast, lst = idx[st], j[st], s[st], a[st], np.abs(l[st])
            front_wall = t.ribcage_a[jst] + t.ribcage_ra[jst]
            d_st = np.maximum.reduce([np.abs(ast - (front_wall + 4 * k)) - 6.0 * k,
                                      lst - np.where(sst < self.s_sternum[0] + 45 * k, 24.0, 15.0) * k,
                                      np.maximum(self.s_sternum[0] - sst, sst - self.s_sternum[1])])
            cv.paint(ist, d_st, Tissue.CORTICAL_BONE)
            cv.paint(ist, d_st + 1.5, Tissue.MARROW)
        d_cavity = d_wall + 13.0 * k
        trunk = (d_cavity < 1.0) & (s > self.s_t1 - 10.0 * k)
        if not trunk.any():
            return
        it = idx[trunk]
        ss, aa, ll, jj = s[it], a[it], l[it], j[it]
        # The cavity's top is a dome (lung apices rise above the first rib beside the spine).
        apex = self.s_t1 - 8.0 * k + 0.0025 * ((aa - 40.0 * k) ** 2 + 0.5 * ll**2) / k
        dc = np.maximum(d_cavity[trunk], apex - ss)
        depth, width = t.depth[jj], t.width[jj]
        x2 = ll / (width / 2 + 16.0)
        x2 *= x2
        gutter = 1.0 / (1.0 + x2 * x2 * x2)  # 1 beside the spine, 0 lateral to it
        s_min, s_max = float(ss.min()), float(ss.max())

        def overlaps(lo: float, hi: float) -> bool:
            return s_min < hi and s_max > lo

        if overlaps(-1e9, self.s_diaphragm + 25.0):
            thorax = ss < self.s_diaphragm - 0.35 * np.maximum(aa, 0.0) + 0.08 * np.abs(ll)
        else:
            thorax = np.zeros(len(ss), dtype=bool)
        lateral_limit = np.where(thorax, -depth / 2 - 14.0, -depth / 2 + 2.0)
        posterior_limit = lateral_limit + gutter * (depth / 2 + 4.0 - lateral_limit)
        dc = np.maximum(dc, posterior_limit - aa)
        cavity = dc < 1.0
        it, dc, thorax = it[cavity], dc[cavity], thorax[cavity]
        ss, aa, ll, jj, depth, width = ss[cavity], aa[cavity], ll[cavity], jj[cavity], depth[cavity], width[cavity]
        cv.paint(it[thorax], dc[thorax], Tissue.LUNG, edge=1.0)
        abdomen = ~thorax
        cv.paint(it[abdomen], dc[abdomen], Tissue.VISCERA, edge=1.5)
        # Bowel: gas pockets and mesenteric fat from a lobular noise field (the texture volume).
        if abdomen.any():
            ib = it[abdomen]
            field = _sample(sc.coarse_noise, ss[abdomen], aa[abdomen], ll[abdomen], (0.7, 0.7, 0.7))
            inner = dc[abdomen] < -3.0
            cv.paint(ib[inner], (1.55 - field[inner]) * 4.0, Tissue.AIR, edge=2.0)
            cv.paint(ib[inner], (field[inner] + 1.25) * 4.0, Tissue.FAT, edge=2.0)
        # Liver in the right upper abdomen (under the right dome), spleen posterolateral on the left.
        if overlaps(self.s_diaphragm - 60 * k, self.s_liver_bottom):
            organ = abdomen & (ss < self.s_liver_bottom)
            if organ.any():
                right = ll[organ] < 0
                top = self.s_diaphragm - 0.35 * np.maximum(aa[organ], 0.0) + 0.08 * np.abs(ll[organ])
                depth_down = np.where(right, self.s_liver_bottom - top, 0.45 * (self.s_liver_bottom - top))
                inside = (ss[organ] - top) / np.maximum(depth_down, 1.0)  # 0 at the dome … 1 at the lower edge
                # The left lobe crosses the midline anteriorly; the spleen sits posterolaterally on the left.
                lateral = np.where(right, -ll[organ] - 25 * k + 0.6 * np.maximum(aa[organ] - 50 * k, 0.0),
                                   (ll[organ] - 40 * k) * 1.6 - np.maximum(aa[organ], 0) * 1.2)
                d_organ = np.maximum.reduce([(inside - 1.0) * 30.0, dc[organ] + 2.0, -lateral])
                cv.paint(it[organ], d_organ, Tissue.LIVER, edge=1.5)
        # Mediastinum: vessels, oesophagus and fat between the lungs; the heart in front.
        med = thorax & (aa > depth / 2 - 4)
        if med.any():
            # Fusiform: narrow behind the sternum and at the spine, widest around the great vessels.
            span = np.maximum(t.ribcage_a[jj[med]] + t.ribcage_ra[jj[med]] - depth[med] / 2, 1.0)
            frac = np.clip((aa[med] - depth[med] / 2) / span, 0.0, 1.0)
            d_med = np.abs(ll[med] - 6.0) - (14.0 + 30.0 * np.sin(np.pi * frac)) * k
            d_med = np.maximum(d_med, dc[med] + 3.0)
            cv.paint(it[med], d_med, Tissue.FAT, edge=1.5)
            cv.paint(it[med], d_med + 4.0, Tissue.FLOWING_BLOOD, edge=2.0, strength=0.55)
        heart_a = t.ribcage_a[jj] + t.ribcage_ra[jj] - 62.0 * k if overlaps(self.s_heart - 66 * k, self.s_heart + 66 * k) else None
        if overlaps(self.s_heart - 66 * k, self.s_heart + 66 * k):
            box = (np.abs(ss - self.s_heart) < 66 * k) & (np.abs(aa - heart_a) < 62 * k) & (np.abs(ll - 18 * k) < 66 * k)
        else:
            box = np.zeros(len(ss), dtype=bool)
        if box.any():
            x = np.sqrt(((ss[box] - self.s_heart) / (62 * k)) ** 2 + ((aa[box] - heart_a[box]) / (58 * k)) ** 2
                        + ((ll[box] - 18 * k) / (62 * k)) ** 2)
            d_heart = np.maximum((x - 1.0) * 58.0 * k, dc[box] + 2.0)
            cv.paint(it[box], d_heart - 3.0, Tissue.FAT, edge=1.5)
            cv.paint(it[box], d_heart, Tissue.MUSCLE, edge=1.5)
            cv.paint(it[box], d_heart + 9.0, Tissue.FLOWING_BLOOD, edge=2.0)
        # Aorta (left anterolateral), IVC (right), kidneys, psoas.
        r_ao = sc.aorta_radius
        front = depth / 2
        ao = ((aa > front) & (aa < front + 2 * r_ao + 6) & (np.abs(ll - r_ao * 0.6 - 5.0) < r_ao + 2)
              & (ss > self.s_aorta[0]) & (ss < self.s_aorta[1]))
        if overlaps(*self.s_aorta) and ao.any():
            d_ao = np.sqrt((aa[ao] - (front[ao] + 3.0 + r_ao)) ** 2 + (ll[ao] - (r_ao * 0.6 + 5.0)) ** 2) - r_ao
            cv.paint(it[ao], d_ao, Tissue.FLOWING_BLOOD)
        ivc = ((aa > front) & (aa < front + 26 * k) & (np.abs(ll + width / 2 + 4 * k) < 14 * k)
               & (ss > self.s_ivc[0]) & (ss < self.s_ivc[1])) if overlaps(*self.s_ivc) else None
        if ivc is not None and ivc.any():
            cv.paint(it[ivc], _ellipse_distance(aa[ivc] - (front[ivc] + 15.0 * k), ll[ivc] + width[ivc] / 2 + 4 * k,
                                                8.0 * k, 12.0 * k), Tissue.FLOWING_BLOOD)
        kid = None
        if overlaps(self.s_kidney - 62 * k, self.s_kidney + 76 * k):
            kid = (np.abs(ss - self.s_kidney - 7 * k) < 68 * k) & (np.abs(aa + 8 * k) < 32 * k)
            kid &= np.abs(np.abs(ll) - (width / 2 + 52.0 * k)) < 37 * k
        if kid is not None and kid.any():
            ik, sk, ak, lk, wk = it[kid], ss[kid], aa[kid], ll[kid], width[kid]
            centre_s = self.s_kidney + np.where(lk > 0, 0.0, 14.0 * k)
            x = np.sqrt(((sk - centre_s) / (52 * k)) ** 2 + ((ak + 8.0 * k) / (22 * k)) ** 2
                        + ((np.abs(lk) - (wk / 2 + 52.0 * k)) / (28 * k)) ** 2)
            d_kid = (x - 1.0) * 24.0 * k
            cv.paint(ik, d_kid - 7.0, Tissue.FAT, edge=1.5)
            cv.paint(ik, d_kid, Tissue.VISCERA, edge=1.0)
        ps = None
        if overlaps(*self.s_psoas):
            ps = (np.abs(aa) < 30 * k) & (np.abs(ll) < width / 2 + 50 * k) & (ss > self.s_psoas[0]) & (ss < self.s_psoas[1])
        if ps is not None and ps.any():
            ip, sp, ap, lp, dp, wp = it[ps], ss[ps], aa[ps], ll[ps], depth[ps], width[ps]
            frac = np.clip((sp - self.s_psoas[0]) / (self.s_psoas[1] - self.s_psoas[0]), 0.0, 1.0)
            r_ps = (4.0 + 20.0 * np.sqrt(frac)) * k
            centre_l = np.sign(lp) * (wp / 2 + 0.75 * r_ps)
            cv.paint(ip, _ellipse_distance(ap + 0.12 * dp, lp - centre_l, 0.9 * r_ps, r_ps), Tissue.MUSCLE, edge=1.0)

    def _ilium(self, cv: _Canvas, idx: np.ndarray, s, a, l) -> None:
        """Iliac bones: a plate per side from the sacroiliac joint (beside the sacral ala) to the
        anterior superior iliac spine, flaring out at the crest and narrowing towards the acetabulum."""
        k = self.scene.scale
        ss, aa, al = s[idx], a[idx], np.abs(l[idx])
        frac = np.clip((ss - self.s_crest) / (self.s_pelvis_bottom - self.s_crest), 0.0, 1.0)
        a0, l0 = self.ilium_joint
        a1 = (45.0 - 25.0 * frac) * k + a0
        l1 = (130.0 - 45.0 * frac) * k
        # Distance from (a, |l|) to the segment (a0, l0)–(a1, l1).
        va, vl = a1 - a0, l1 - l0
        u = np.clip(((aa - a0) * va + (al - l0) * vl) / (va * va + vl * vl), 0.0, 1.0)
        dist = np.sqrt((aa - a0 - u * va) ** 2 + (al - l0 - u * vl) ** 2)
        half = (3.5 + 5.0 * frac + 3.0 * (1.0 - u)) * k
        crest = (self.s_crest + 6.0 * k) - ss
        d = np.maximum(dist - half, crest)
        cv.paint(idx, np.maximum(dist - half - 14.0 * k, crest - 4.0), Tissue.MUSCLE, edge=2.0)  # iliacus / glutei
        cv.paint(idx, d, Tissue.CORTICAL_BONE)
        cv.paint(idx, d + 1.5, Tissue.MARROW)

    def _ribs(self, cv: _Canvas, idx: np.ndarray, s, a, l, j) -> None:
        if len(self.rib_segments) == 0:
            return
        sc, t = self.scene, self.scene.tables
        k = sc.scale
        jj = j[idx]
        aa, ll, ss = a[idx], l[idx], s[idx]
        ca, ra, rl = t.ribcage_a[jj], t.ribcage_ra[jj], t.ribcage_rl[jj]
        x, y = (aa - ca) / ra, ll / rl
        norm = np.sqrt(x * x + y * y)
        r = np.sqrt((aa - ca) ** 2 + ll**2)
        d_rad = r - r / np.maximum(norm, 1e-3)
        angle = np.abs(np.arctan2(y, x)) / np.pi  # 0 anterior … 1 posterior
        # Scapulae: thin blades on the posterior chest wall, outside the ribs, T2 … T8.
        blade = ((ss > self.s_scapula[0]) & (ss < self.s_scapula[1]) & (angle > 0.55)
                 & (np.abs(ll) > 45.0 * k) & (np.abs(ll) < 115.0 * k))
        if blade.any():
            d_blade = np.maximum(np.abs(d_rad[blade] - 15.0 * k) - 2.5 * k,
                                 np.maximum(45.0 * k + 0.25 * (ss[blade] - self.s_scapula[0]) - np.abs(ll[blade]),
                                            np.abs(ll[blade]) - 115.0 * k))
            cv.paint(idx[blade], d_blade - 8.0 * k, Tissue.MUSCLE, edge=2.0)  # subscapularis / infraspinatus
            cv.paint(idx[blade], d_blade, Tissue.CORTICAL_BONE)
            cv.paint(idx[blade], d_blade + 1.2, Tissue.MARROW)
        near = (np.abs(d_rad) < 10.0) & (np.abs(ll) > t.width[jj] / 2 + 6.0) & (angle > 0.08)
        idx, d_rad, angle, ss, jj = idx[near], d_rad[near], angle[near], ss[near], jj[near]
        descent = 60.0 * k * (1.0 - angle)
        shifted = ss - descent
        nearest = np.clip(np.searchsorted(self.rib_start, shifted), 1, len(self.rib_start) - 1)
        choose = np.where(np.abs(shifted - self.rib_start[nearest - 1]) < np.abs(shifted - self.rib_start[nearest]),
                          nearest - 1, nearest)
        number = self.rib_number[choose]
        end_angle = np.where(number <= 7, 0.1, np.where(number <= 10, 0.16 + 0.04 * (number - 8), 0.45 + 0.1 * (number - 11)))
        along = np.maximum(end_angle - angle, 0.0) * 400.0  # mm beyond the rib's anterior end
        ds = ss - (self.rib_start[choose] + descent)
        e = np.sqrt((d_rad / 3.8) ** 2 + (ds / (6.0 * k)) ** 2)
        d = np.maximum((e - 1.0) * 3.8, along)
        cartilage = angle < 0.3
        cv.paint(idx[cartilage], d[cartilage], Tissue.CARTILAGE)
        bone = ~cartilage
        cv.paint(idx[bone], d[bone], Tissue.CORTICAL_BONE)
        cv.paint(idx[bone], d[bone] + 1.3, Tissue.MARROW)

    def _posterior(self, cv: _Canvas, idx: np.ndarray, s, a, l, j) -> None:
        """Foramina, pedicles, laminae, transverse and spinous processes, facet columns, C1."""
        sc, t = self.scene, self.scene.tables
        k = sc.scale
        f = self.seg_f
        idx = idx[a[idx] < self.posterior_front[j[idx]]]
        if not len(idx):
            return
        jj = j[idx]
        v = t.seg_owner[jj]
        ss, aa, ll = s[idx], a[idx], l[idx]
        al = np.abs(ll)
        par = self.params[v]
        kind = self.kind[v]
        depth, shift, h = f["depth"][v], f["shift"][v], f["height"][v]
        canal_ra, canal_rl = par[:, P_CANAL_A], par[:, P_CANAL_L]
        canal_c = shift - depth / 2 - canal_ra
        front_wall = shift - depth / 2
        lateral = al - canal_rl
        kd = t.disc_owner[jj]
        sd = ss - self.disc_centre[kd]
        hd = self.disc_height[kd]

        # Foramina: fat around the exiting root between the pedicles at each disc level.
        zone = (np.abs(lateral - 7.0 * k) < 7.0 * k + 1.0) & (np.abs(aa - canal_c - 2.0) < 1.1 * canal_ra + 1.0)
        zone &= canal_ra > 0.5  # no foramina beside the coccyx
        if zone.any():
            z = np.nonzero(zone)[0]
            iz, cz, crz = idx[z], canal_c[z], canal_ra[z]
            # Inverted-teardrop foramen in the parasagittal plane: wide at the root, narrow at the disc.
            semi_s = hd[z] / 2 + 0.3 * h[z]
            rel_s = (sd[z] + semi_s) / (2 * semi_s)  # 0 top … 1 bottom
            semi_a = crz * (1.15 - 0.45 * np.clip(rel_s, 0, 1))
            x = np.sqrt((sd[z] / semi_s) ** 2 + ((aa[z] - (cz + 2.0)) / semi_a) ** 2 + ((lateral[z] - 7.0 * k) / (7.5 * k)) ** 2)
            box = (x - 1.0) * np.minimum(semi_a, 7.0 * k)
            cv.paint(iz, box, Tissue.FAT, edge=1.0)
            # Stenosis: disc / uncovertebral bulge from the front, facet (SAP) hypertrophy from behind.
            sev = np.where(ll[z] > 0, sc.foraminal[kd[z], 0], sc.foraminal[kd[z], 1])
            narrowed = sev > 0
            if narrowed.any():
                span = 2.2 * crz[narrowed]
                take = np.array([0.0, 0.2, 0.33, 0.47], dtype=np.float32)[sev[narrowed]] * span
                box_front = cz[narrowed] + 2.0 + 1.1 * crz[narrowed]
                box_back = box_front - span
                inr, bn, an = iz[narrowed], box[narrowed], aa[z][narrowed]
                cv.paint(inr, np.maximum(bn, (box_front - take) - an), Tissue.ANNULUS)
                cv.paint(inr, np.maximum(bn, an - (box_back + take)), Tissue.LIGAMENT)
            root_s = self.disc_centre[kd[z]] - hd[z] / 2 - 0.22 * h[z]
            root = _ellipse_distance(ss[z] - root_s, aa[z] - (cz + 1.0), 2.6 * k, 2.2 * k)
            cv.paint(iz, np.maximum(root, np.abs(lateral[z] - 6.0 * k) - 6.0 * k), Tissue.NERVE)

        # Bone: pedicles, transverse processes / alae, facet columns (lateral zone) and laminae.
        bone = np.full(len(idx), 99.0, dtype=np.float32)
        ped_l = par[:, P_PED_L]
        zone = (np.abs(lateral - ped_l) < ped_l + 1.0) & (aa > canal_c - 0.3 * canal_ra - 1.0) & (kind != C1)
        zone &= par[:, P_PED_S] > 0
        if zone.any():
            z = np.nonzero(zone)[0]
            ped_s = f["centre"][v[z]] - 0.15 * h[z]
            d_ped = _ellipse_distance(ss[z] - ped_s, lateral[z] - ped_l[z], par[z, P_PED_S], ped_l[z])
            d_ped = np.maximum(d_ped, np.maximum(aa[z] - (front_wall[z] + 3.0), (canal_c[z] - 0.3 * canal_ra[z]) - aa[z]))
            bone[z] = np.minimum(bone[z], d_ped)
        tp_len = par[:, P_TP_LEN]
        zone = (lateral > -1.0) & (lateral < tp_len + 1.0) & (kind != C1) & (tp_len > 0)
        if zone.any():
            z = np.nonzero(zone)[0]
            kz, vz, lz, cz, crz = kind[z], v[z], lateral[z], canal_c[z], canal_ra[z]
            # Thoracic: posterolateral to meet the ribs; cervical: anterior; sacrum: the alae.
            tp_a = np.where(kz == THORACIC, cz - 0.55 * np.maximum(lz, 0.0),
                            np.where(kz == CERVICAL, shift[z] - 0.2 * depth[z], cz + 0.25 * crz))
            sacral = kz >= S1
            tp_a = np.where(sacral, shift[z] - 0.1 * depth[z], tp_a)
            semi_a = np.where(sacral, 0.42 * depth[z], np.where(kz == LUMBAR, 4.0 * k, 4.5 * k))
            semi_s = np.where(sacral, 0.5 * (f["bottom"][vz] - f["top"][vz]), np.where(kz == LUMBAR, 5.0 * k, 4.5 * k))
            tp_s = np.where(sacral, f["centre"][vz], f["centre"][vz] - 0.1 * h[z])
            d_tp = np.maximum.reduce([np.abs(aa[z] - tp_a) - semi_a, np.abs(ss[z] - tp_s) - semi_s,
                                      lz - tp_len[z], -lz])
            bone[z] = np.minimum(bone[z], d_tp)
        fa, fl = par[:, P_FACET_A], par[:, P_FACET_L]
        fc_a = canal_c - 0.35 * canal_ra
        fc_l = canal_rl + 0.6 * fl + 1.5 * k
        zone = (np.abs(aa - fc_a) < fa + 1.0) & (np.abs(al - fc_l) < fl + 1.0) & (fa > 0) & (kind != C1)
        zone &= ss < f["centre"][self.index["S1"]]
        if zone.any():
            z = np.nonzero(zone)[0]
            d_fac = _ellipse_distance(aa[z] - fc_a[z], al[z] - fc_l[z], fa[z], fl[z])
            bone[z] = np.minimum(bone[z], d_fac)
            # Joint space: oblique in the axial plane (lumbar) or in the sagittal plane (cervical, thoracic).
            kz = kind[z]
            tilt = np.where(kz == THORACIC, 0.35, np.where(kz <= CERVICAL, 0.9, 0.0))
            gap_sag = np.abs(sd[z] + tilt * (aa[z] - fc_a[z])) - 0.6
            gap_ax = np.maximum(np.abs((al[z] - fc_l[z]) + 0.8 * (aa[z] - fc_a[z])) - 0.6,
                                np.abs(sd[z]) - (hd[z] / 2 + 0.3 * h[z]))
            gap = np.where(kz == LUMBAR, gap_ax, gap_sag)
            joint_idx, joint_d = idx[z], np.maximum(gap, d_fac + 0.8)
        else:
            joint_idx = None
        lam = par[:, P_LAMINA]
        zone = (al < canal_rl + lam + 3.0 * k) & (aa < canal_c + 0.2 * canal_ra) & (kind != COCCYX)
        if zone.any():
            z = np.nonzero(zone)[0]
            vz, kz = v[z], kind[z]
            d_in = _ellipse_distance(aa[z] - canal_c[z], ll[z], canal_ra[z], canal_rl[z])
            d_out = _ellipse_distance(aa[z] - canal_c[z], ll[z], canal_ra[z] + lam[z], canal_rl[z] + lam[z] + 2.0 * k)
            # Laminae are shifted caudally like roof tiles; the sacral roof is continuous.
            lam_top = np.where(kz >= S1, f["top"][vz], f["centre"][vz] - 0.35 * h[z])
            lam_bottom = np.where(kz >= S1, f["bottom"][vz] + 1.0, f["centre"][vz] + 0.62 * h[z])
            d_lam = np.maximum.reduce([d_out, -d_in, lam_top - ss[z], ss[z] - lam_bottom,
                                       aa[z] - (canal_c[z] + 0.1 * canal_ra[z])])
            bone[z] = np.minimum(bone[z], np.where(kz == C1, 99.0, d_lam))
        tumour = sc.posterior_tumour[v] > 0
        painted = bone < 0.5 * EDGE_MM
        ib, db = idx[painted & ~tumour], bone[painted & ~tumour]
        cv.paint(ib, db, Tissue.CORTICAL_BONE)
        cv.paint(ib, db + 1.2, Tissue.MARROW)
        cv.paint(idx[painted & tumour], bone[painted & tumour], Tissue.TUMOUR_SOFT)
        if joint_idx is not None:
            cv.paint(joint_idx, joint_d, Tissue.JOINT_FLUID)

        # Vertebral arteries in the cervical transverse foramina (flow voids), C6 up to C1.
        zone = ((kind == CERVICAL) | (kind == C2)) & (ss > self.s_vertebral_artery[0])
        zone &= (ss < self.s_vertebral_artery[1]) & (np.abs(lateral - 0.45 * tp_len) < 4.0 * k)
        if zone.any():
            z = np.nonzero(zone)[0]
            artery = np.sqrt((aa[z] - (shift[z] - 0.2 * depth[z])) ** 2 + (lateral[z] - 0.45 * tp_len[z]) ** 2) - 2.3 * k
            cv.paint(idx[z], artery, Tissue.FLOWING_BLOOD)

        # Spinous processes of this segment and of the one above (mid-thoracic ones overlap).
        zone = (al < 6.0 * k) & (aa < canal_c - canal_ra + 2.0)
        if zone.any():
            z = np.nonzero(zone)[0]
            iz, sz, az, alz, vz = idx[z], ss[z], aa[z], al[z], v[z]
            for offset in (0, 1):
                u = np.maximum(vz - offset, 0)
                par_u = self.params[u]
                cra, kind_u = par_u[:, P_CANAL_A], self.kind[u]
                start = f["shift"][u] - f["depth"][u] / 2 - 2 * cra - 0.5 * par_u[:, P_LAMINA]
                length = par_u[:, P_SP_LEN]
                dist = start - az
                s_line = f["centre"][u] + 0.15 * f["height"][u] + par_u[:, P_SP_TILT] * np.maximum(dist, 0.0)
                half_h = par_u[:, P_SP_S] * (1.0 - 0.3 * np.clip(dist / np.maximum(length, 1.0), 0, 1))
                half_w = np.where(kind_u == LUMBAR, 3.5 * k, 2.8 * k)
                d_sp = np.maximum.reduce([np.abs(sz - s_line) - half_h, alz - half_w, dist - length, -dist - 2.0])
                valid = (length > 0) & (kind_u != COCCYX) & ((offset == 0) | (vz > 0))
                d_sp = np.where(valid, d_sp, 99.0)
                cv.paint(iz, d_sp, Tissue.CORTICAL_BONE)
                cv.paint(iz, d_sp + 1.2, Tissue.MARROW)

        # C1: anterior arch, lateral masses, posterior arch around the dens and the canal.
        at_c1 = np.abs(ss - f["centre"][0]) < 12.0 * k
        if at_c1.any():
            i1 = idx[at_c1]
            s1, a1, l1 = ss[at_c1], aa[at_c1], ll[at_c1]
            c2 = 1
            dens_front = f["shift"][c2] + 5.5 * k
            canal_back = f["shift"][c2] - f["depth"][c2] / 2 - 2 * self.params[c2, P_CANAL_A]
            mid = (dens_front + 1.5 + canal_back) / 2
            half = (dens_front + 1.5 - canal_back) / 2
            inner = _ellipse_distance(a1 - mid, l1, half, 15.0 * k)
            outer = _ellipse_distance(a1 - mid, l1, half + 6.5 * k, 22.0 * k)
            ring = np.maximum.reduce([outer, -inner, np.abs(s1 - f["centre"][0]) - 5.0 * k])
            masses = _ellipse_distance(np.sqrt((s1 - f["centre"][0]) ** 2 * 0.6 + (a1 - mid) ** 2), np.abs(l1) - 20.0 * k,
                                       8.0 * k, 7.0 * k)
            tp1 = np.maximum.reduce([np.abs(a1 - mid) - 4.0 * k, np.abs(s1 - f["centre"][0]) - 4.0 * k,
                                     np.abs(l1) - 38.0 * k])
            c1 = np.minimum.reduce([ring, masses, tp1])
            cv.paint(i1, c1, Tissue.CORTICAL_BONE)
            cv.paint(i1, c1 + 1.2, Tissue.MARROW)

    def _canal(self, cv: _Canvas, idx: np.ndarray, s, a, l, j) -> None:
        sc, t = self.scene, self.scene.tables
        k = sc.scale
        jj = j[idx]
        ca, cra, crl = t.canal_a[jj], t.canal_ra[jj], t.canal_rl[jj]
        aa, ll = a[idx], l[idx]
        box = (np.abs(aa - ca) < cra + 2.0) & (np.abs(ll) < crl + 2.0) & (cra > 0.5)
        idx, jj, aa, ll, ca, cra, crl = idx[box], jj[box], aa[box], ll[box], ca[box], cra[box], crl[box]
        ss = s[idx]
        d_canal = _ellipse_distance(aa - ca, ll, cra, crl)
        intracranial = ss < self.s_skull
        cv.paint(idx[~intracranial], d_canal[~intracranial], Tissue.FAT)
        cv.paint(idx[intracranial], d_canal[intracranial], Tissue.CSF)
        lateral = np.clip(1.0 - (ll / np.maximum(crl, 1e-3)) ** 2, 0.0, 1.0)
        back_wall = ca - cra
        front_wall = ca + cra
        # Posterior longitudinal ligament: a thin dark band on the back of the bodies and discs.
        pll = np.maximum(d_canal, (front_wall - aa) - 1.0 * k) + np.abs(ll) * 0.02
        cv.paint(idx[~intracranial], pll[~intracranial], Tissue.DARK_LIGAMENT)
        sa, sra, srl = t.sac_a[jj], t.sac_ra[jj], t.sac_rl[jj]
        d_sac = _ellipse_distance(aa - sa, ll, sra, srl)
        d_sac = np.where(sra > 0.3, d_sac, 99.0)
        cv.paint(idx, d_sac, Tissue.CSF)
        roots = t.roots[jj]
        d_roots = _ellipse_distance(aa - (sa - 0.35 * sra), ll, 0.5 * sra, 0.65 * srl)
        cv.paint(idx, np.maximum(d_roots, d_sac), Tissue.NERVE, strength=0.55 * roots)
        cv.paint(idx, d_sac, Tissue.NERVE, strength=0.75 * t.effaced[jj])
        # Ligamentum flavum (thickened at stenotic levels), disc bulge / osteophyte from the front,
        # lateral-recess hypertrophy: painted over the sac so they indent it.
        bulge = np.maximum(d_canal, (front_wall - aa) - t.anterior_intrusion[jj] * (0.5 + 0.5 * lateral))
        cv.paint(idx, np.where(t.anterior_intrusion[jj] > 0.05, bulge, 99.0), Tissue.ANNULUS)
        thick = np.maximum(d_canal, (aa - back_wall) - t.flavum[jj] * lateral)
        cv.paint(idx[~intracranial], thick[~intracranial], Tissue.LIGAMENT)
        for side, table in ((1.0, t.recess_left), (-1.0, t.recess_right)):
            radius = table[jj]
            rec = np.sqrt((aa - (ca - 0.3 * cra)) ** 2 + (ll - side * (crl - 0.5)) ** 2) - radius
            cv.paint(idx, np.where(radius > 0.1, np.maximum(rec, d_canal - 0.5), 99.0), Tissue.LIGAMENT)
        # Herniated disc material (focal, possibly paracentral / migrated).
        for disc, h_s, h_depth, h_l, h_semi_s, extrusion in sc.herniations:
            near = np.abs(ss - h_s) < h_semi_s + 2.0
            if not np.any(near):
                continue
            centre_a = front_wall[near] - h_depth / 2 + 1.0
            x = np.sqrt(((ss[near] - h_s) / h_semi_s) ** 2 + ((aa[near] - centre_a) / (h_depth / 2 + 1.0)) ** 2
                        + ((ll[near] - h_l) / (7.0 * k)) ** 2)
            d_h = np.maximum((x - 1.0) * min(h_depth / 2 + 1.0, 4.0), d_canal[near] - 1.0)
            if extrusion:
                rows = np.full(int(near.sum()), sc.nucleus_row0 + disc, dtype=np.intp)
                cv.paint(idx[near], d_h, Tissue.NUCLEUS, rows=rows)
            else:
                cv.paint(idx[near], d_h, Tissue.ANNULUS)
        # Epidural tumour: a front at depth mass_depth from its wall, receding laterally.
        depth = t.mass_depth[jj]
        has_mass = depth > 0.05
        if np.any(has_mass):
            im = idx[has_mass]
            jm = jj[has_mass]
            am, lm, dc = aa[has_mass], ll[has_mass], d_canal[has_mass]
            anterior = t.mass_anterior[jm]
            from_wall = np.where(anterior, front_wall[has_mass] - am, am - back_wall[has_mass])
            front = depth[has_mass] - t.mass_kappa[jm] * lm**2
            d_mass = np.maximum(from_wall - front, dc)
            cv.paint(im, d_mass, Tissue.TUMOUR_SOFT)
            full = t.bilsky[jm] == 5
            cv.paint(im[full], np.maximum(d_sac[has_mass][full], dc[full]) - 0.5, Tissue.TUMOUR_SOFT)
        # Cord (medulla above the foramen magnum), painted last so it is never hidden.
        d_cord = _ellipse_distance(aa - t.cord_a[jj], ll, t.cord_ra[jj], t.cord_rl[jj])
        cv.paint(idx, np.where(t.cord_ra[jj] > 0.2, d_cord, 99.0), Tissue.CORD)

    def _discs(self, cv: _Canvas, idx: np.ndarray, s, a, l, j) -> None:
        sc, t = self.scene, self.scene.tables
        jj = j[idx]
        shift = t.shift[jj]
        aa, ll = a[idx] - shift, l[idx]
        box = (np.abs(aa) < t.depth[jj] / 2 + 6.0) & (np.abs(ll) < t.width[jj] / 2 + 6.0) & (s[idx] > self.seg_f["top"][1] - 1)
        idx, jj, aa, ll = idx[box], jj[box], aa[box], ll[box]
        kd = t.disc_owner[jj]
        sd = s[idx] - self.disc_centre[kd]
        hd = self.disc_height[kd]
        near = np.abs(sd) < hd / 2 + 4.0
        idx, jj, aa, ll, kd, sd, hd = idx[near], jj[near], aa[near], ll[near], kd[near], sd[near], hd[near]
        bulge_profile = np.clip(1.0 - (2.0 * sd / np.maximum(hd, 0.5)) ** 2, 0.0, 1.0)
        bulge = sc.disc_bulge[kd] * bulge_profile
        d_r = _ellipse_distance(aa, ll, t.depth[jj] / 2 + bulge, t.width[jj] / 2 + bulge)
        d_disc = np.maximum(d_r, np.abs(sd) - (hd / 2 + 2.5))
        fused = sc.discs.fused[kd]
        cv.paint(idx[~fused], d_disc[~fused], Tissue.ANNULUS)
        cv.paint(idx[fused], d_disc[fused], Tissue.MARROW_SCLEROTIC)
        depth, width = t.depth[jj], t.width[jj]
        x = np.sqrt(((aa + 0.06 * depth) / (0.34 * depth)) ** 2 + (ll / (0.35 * width)) ** 2
                    + (sd / (0.44 * hd + 0.6)) ** 2)
        d_nuc = (x - 1.0) * np.minimum(0.34 * depth, 0.44 * hd + 0.6)
        rows = sc.nucleus_row0 + kd
        blur = sc.disc_blur[kd]
        live = ~fused
        cv.paint(idx[live], d_nuc[live], Tissue.NUCLEUS, edge=1.0, rows=rows[live])
        if np.any(live & (blur > 1.0)):
            soft = live & (blur > 1.0)
            cv.paint(idx[soft], d_nuc[soft] - blur[soft] / 2, Tissue.NUCLEUS, edge=blur[soft] * 1.5,
                     rows=rows[soft], strength=0.5)
        cleft = live & sc.disc_cleft[kd]
        cv.paint(idx[cleft], np.maximum(np.abs(sd[cleft]) - 0.45, d_nuc[cleft]), Tissue.ANNULUS, strength=0.7)

    def _bodies(self, cv: _Canvas, idx: np.ndarray, s, a, l, j) -> None:
        sc, t = self.scene, self.scene.tables
        k = sc.scale
        f = self.seg_f
        jj = j[idx]
        v = t.seg_owner[jj]
        kind = self.kind[v]
        aa, ll = a[idx] - f["shift"][v], l[idx]
        ss = s[idx]
        depth, width = f["depth"][v], f["width"][v]
        box = (np.abs(aa) < depth / 2 + 3.0) & (np.abs(ll) < width / 2 + 3.0) & (kind != C1)
        # C2's dens rises above its body into the C1 ring.
        dens_zone = (v <= 1) & (ss < f["top"][1] + 3.0) & (ss > f["top"][1] - 20.0 * k)
        if np.any(dens_zone):
            i2 = idx[dens_zone]
            s2, a2, l2 = ss[dens_zone], aa[dens_zone] + f["shift"][v][dens_zone] - f["shift"][1], ll[dens_zone]
            tip = f["top"][1] - 15.0 * k
            r_dens = 5.2 * k
            radial = np.sqrt(a2**2 + l2**2) - r_dens * np.clip((s2 - tip) / 4.0 + 0.4, 0.4, 1.0)
            d_dens = np.maximum(radial, np.maximum(tip - s2, s2 - (f["top"][1] + 3.0)))
            cv.paint(i2, d_dens, Tissue.CORTICAL_BONE)
            cv.paint(i2, d_dens + 1.0, Tissue.MARROW)
            dens_front = np.maximum(np.abs(a2 - (r_dens + 0.8)) - 0.7, np.maximum(np.abs(l2) - 5.0, np.abs(s2 - (tip + 7.0)) - 6.0))
            cv.paint(i2, dens_front, Tissue.JOINT_FLUID, strength=0.7)
        idx, v, kind, aa, ll, ss = idx[box], v[box], kind[box], aa[box], ll[box], ss[box]
        depth, width = depth[box], width[box]
        h_eff = f["bottom"][v] - f["top"][v]
        rel = (ss - f["centre"][v]) / np.maximum(h_eff / 2, 0.5)
        waist = 1.0 - f["waist"][v] * np.clip(1.0 - rel**2, 0.0, 1.0)
        d2, w2 = depth / 2 * waist, width / 2 * waist
        xa = np.abs(aa) / d2
        xa = np.where(aa < 0, xa**2, xa)  # flat posterior wall, rounded anterior
        xl = np.abs(ll) / w2
        norm = np.sqrt(xa**2 + xl**2)
        r = np.sqrt(aa**2 + ll**2)
        # r / norm is the wall's radius along the point's direction; on the body axis itself that
        # direction is undefined (0/0), and the point is as deep inside as a point can be.
        on_axis = norm < 1e-6
        d_r = np.where(on_axis, -np.minimum(d2, w2), r - r / np.where(on_axis, 1.0, norm))
        # Degenerative osteophytes: anterior/lateral lips growing out at the endplate margins.
        spur_top, spur_bottom = sc.osteophytes[v, 0], sc.osteophytes[v, 1]
        if np.any(spur_top > 0) or np.any(spur_bottom > 0):
            near_top = np.clip(1.0 - (ss - f["top"][v]) / 4.0, 0.0, 1.0)
            near_bottom = np.clip(1.0 - (f["bottom"][v] - ss) / 4.0, 0.0, 1.0)
            front = np.clip(aa / (0.5 * d2) + 0.2, 0.0, 1.0)
            d_r = d_r - front * (spur_top * near_top + spur_bottom * near_bottom)
        dish = np.clip(1.0 - norm**2, 0.0, 1.0)
        top = f["top"][v] + f["concavity_top"][v] * dish
        bottom = f["bottom"][v] - f["concavity_bottom"][v] * dish
        d_v = np.maximum(top - ss, ss - bottom)
        corner = 1.5 * k
        d_body = (np.sqrt(np.maximum(d_r + corner, 0) ** 2 + np.maximum(d_v + corner, 0) ** 2)
                  + np.minimum(np.maximum(d_r + corner, d_v + corner), 0.0) - corner)
        cv.paint(idx, d_body, Tissue.CORTICAL_BONE)
        cortex = np.where(kind <= CERVICAL, 0.8, 1.1)
        rows = sc.marrow_row0 + v
        inner = d_body + cortex
        cv.paint(idx, inner, Tissue.MARROW, rows=rows)
        # Basivertebral vein: a small bright notch in the middle of the posterior wall.
        vein = np.maximum.reduce([np.abs(ss - f["centre"][v]) - 1.2, aa - (-depth / 2 + 0.22 * depth), np.abs(ll) - 2.5,
                                  inner])
        cv.paint(idx, np.where(kind <= SACRAL, vein, 99.0), Tissue.FAT, strength=0.6)
        # Modic changes next to the endplates.
        for side, surface in ((0, top), (1, bottom)):
            mtype = sc.modic[v, side, 0]
            mdepth = sc.modic[v, side, 1]
            dist = (ss - surface) if side == 0 else (surface - ss)
            zone = np.maximum(inner, dist - mdepth)
            for code, tissue in ((1, Tissue.MARROW_OEDEMA), (2, Tissue.MARROW_FATTY), (3, Tissue.MARROW_SCLEROTIC)):
                sel = mtype == code
                if np.any(sel):
                    cv.paint(idx[sel], zone[sel], tissue, edge=2.0)
        oedema = sc.oedema[v]
        if np.any(oedema > 0):
            sel = oedema > 0
            cv.paint(idx[sel], inner[sel], Tissue.MARROW_OEDEMA, edge=2.0, strength=oedema[sel])
        # Focal lesions (metastases) and Schmorl nodes.
        for lesion in sc.lesions + sc.schmorl:
            sel = (v == lesion.segment) & (np.abs(ss - lesion.centre[0]) < lesion.radii[0] + 2.0)
            if not np.any(sel):
                continue
            x = np.sqrt(((ss[sel] - lesion.centre[0]) / lesion.radii[0]) ** 2
                        + ((aa[sel] + f["shift"][v][sel] - lesion.centre[1]) / lesion.radii[1]) ** 2
                        + ((ll[sel] - lesion.centre[2]) / lesion.radii[2]) ** 2)
            d_les = np.maximum((x - 1.0) * min(lesion.radii), d_body[sel])
            if lesion.tissue == Tissue.NUCLEUS:
                cv.paint(idx[sel], d_les - 1.2, Tissue.MARROW_SCLEROTIC, edge=1.0)
                cv.paint(idx[sel], d_les, Tissue.ANNULUS, edge=0.8)
            else:
                cv.paint(idx[sel], d_les, lesion.tissue, edge=1.2)

    def _texture(self, cv: _Canvas, points: np.ndarray, s, a, l, texture: np.ndarray, additive: np.ndarray) -> None:
        """Modulate each tissue with its texture: trabecular (fine, isotropic 1 mm), fibre striation
        (muscle: elongated along the spine axis) or lobular (fat, viscera: isotropic ~4 mm)."""
        kind = _TEXTURE_KIND[cv.label]
        tex = np.zeros(len(s), dtype=np.float32)
        for code, noise, scales, local in ((0, self.scene.noise, (1.1, 1.1, 1.1), False),
                                           (1, self.scene.coarse_noise, (2.5, 2.5, 0.5), True),
                                           (2, self.scene.coarse_noise, (1.2, 1.2, 1.2), False)):
            sel = kind == code
            if not sel.any():
                continue
            if local:
                x, y, z = l[sel], a[sel], s[sel]
            else:
                x, y, z = points[sel, 0], points[sel, 1], points[sel, 2]
            tex[sel] = _sample(noise, x, y, z, scales)
        for c in range(cv.sig.shape[0]):
            amp = texture[:, c].take(cv.label)
            if additive[c]:
                cv.sig[c] += amp * tex
            else:
                cv.sig[c] *= 1.0 + amp * tex


def _sample(noise: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, scales: tuple[float, float, float]) -> np.ndarray:
    """Nearest-voxel lookup in a periodic cubic noise volume (power-of-two size), coordinates scaled."""
    n = noise.shape[0]
    m = n - 1
    flat = ((x * scales[0]).astype(np.intp) & m) * (n * n)
    flat += ((y * scales[1]).astype(np.intp) & m) * n
    flat += (z * scales[2]).astype(np.intp) & m
    return noise.reshape(-1).take(flat)


#: Texture kind per tissue (-1: none): 0 fine/trabecular, 1 striated (muscle fibres), 2 lobular (fat, organs).
_TEXTURE_KIND = np.zeros(len(Tissue), dtype=np.int8)
_TEXTURE_KIND[Tissue.AIR] = -1
_TEXTURE_KIND[[Tissue.MUSCLE, Tissue.SKIN]] = 1
_TEXTURE_KIND[[Tissue.FAT, Tissue.VISCERA, Tissue.LUNG, Tissue.BRAIN, Tissue.FLOWING_BLOOD, Tissue.LIVER]] = 2
