"""MANO for both hands on top of `smplx.MANO`, with the 21-joint set InterWild uses.

`HandModel` loads MANO_RIGHT.pkl / MANO_LEFT.pkl from a folder (licensed files or the stand-in
from `handrecon.hand_model.standin`), accepts poses as axis-angle, 6D, matrices or PCA
coefficients, and returns per-hand meshes (B, 778, 3), the two-hand mesh (B, 1556, 3) with the
right hand first, and 21 joints per hand regressed from each hand's own mesh. Metres throughout.
"""
from __future__ import annotations

import contextlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import smplx
import torch
from smplx.utils import Struct
from torch import nn

from ..errors import UserError
from .constants import (
    FINGERTIP_VERTEX_IDS,
    MANO21_FROM_MANO16_PLUS_TIPS,
    NUM_BETAS,
    NUM_FACES,
    NUM_VERTS,
)
from .rotation import axis_angle_to_matrix, matrix_to_axis_angle, rot6d_to_axis_angle

SIDES = ("right", "left")

# key -> expected shape (None: any size on that axis)
_MANO_KEYS = {
    "v_template": (NUM_VERTS, 3),
    "f": (NUM_FACES, 3),
    "J_regressor": (16, NUM_VERTS),
    "weights": (NUM_VERTS, 16),
    "shapedirs": (NUM_VERTS, 3, None),
    "posedirs": (NUM_VERTS, 3, 135),
    "kintree_table": (2, 16),
    "hands_components": (45, 45),
    "hands_mean": (45,),
}


class MANOFileError(UserError):
    """A MANO folder or file is missing or malformed."""


def _where_to_get(folder: Path) -> str:
    return (
        f"put the licensed MANO_RIGHT.pkl and MANO_LEFT.pkl (mano.is.tue.mpg.de, models/) in {folder}, "
        f"or write the stand-in there with: python tools/make_standin_mano.py --out {folder}"
    )


class _ChumpyObject:
    """Placeholder for chumpy arrays in official MANO pickles, so chumpy need not be installed."""

    def __setstate__(self, state):
        self.state = state

    def to_numpy(self, key: str, path: Path) -> np.ndarray:
        if isinstance(self.state, dict) and "x" in self.state:
            return np.asarray(self.state["x"])
        raise MANOFileError(f"{path}: field '{key}' is a chumpy expression that cannot be read without chumpy")


# What a MANO pickle may reference besides chumpy (mapped to _ChumpyObject): numpy array and
# scalar reconstruction (numpy 1.x and 2.x module names), scipy.sparse matrices (J_regressor),
# and the helpers Python 2 pickles use to rebuild such objects. Any other class is refused, so a
# shared file cannot run code while it loads.
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric", "numpy")
_ALLOWED_GLOBALS = frozenset(
    [(m, n) for m in _NUMPY_MODULES for n in ("_reconstruct", "scalar", "ndarray", "dtype", "_frombuffer")]
    + [(m, "_reconstructor") for m in ("copyreg", "copy_reg")]  # Python 3 and 2 names
    + [(m, "object") for m in ("builtins", "__builtin__")]
    + [("_codecs", "encode")]
)
_SPARSE_CLASSES = ("csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array")


class _ManoUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "chumpy":
            return _ChumpyObject
        if (module, name) in _ALLOWED_GLOBALS or (module.startswith("scipy.sparse") and name in _SPARSE_CLASSES):
            return super().find_class(module, name)
        if module.startswith("numpy.dtypes") and name.endswith("DType"):  # numpy >= 1.25 dtype classes
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name}: a MANO file holds only numpy arrays, scipy.sparse matrices and chumpy arrays"
        )


def load_mano_file(path: str | Path) -> dict:
    """Read and validate one MANO pickle; chumpy arrays become numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise MANOFileError(f"MANO file not found: {path}; {_where_to_get(path.parent)}")
    try:
        with open(path, "rb") as fh:
            data = _ManoUnpickler(fh, encoding="latin1").load()
    except Exception as exc:  # any unpickling failure means the file is not a MANO pickle
        raise MANOFileError(f"{path}: not a readable MANO pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise MANOFileError(f"{path}: expected a dict of MANO arrays, got {type(data).__name__}")
    out = dict(data)
    for key, shape in _MANO_KEYS.items():
        if key not in data:
            raise MANOFileError(f"{path}: missing field '{key}' (found: {', '.join(sorted(data))})")
        value = data[key]
        if isinstance(value, _ChumpyObject):
            value = value.to_numpy(key, path)
        if key == "J_regressor" and hasattr(value, "toarray"):
            value = value.toarray()
        value = np.asarray(value)
        if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
            raise MANOFileError(f"{path}: field '{key}' has shape {value.shape}, expected {shape}")
        out[key] = value
    if out["shapedirs"].shape[2] < NUM_BETAS:
        raise MANOFileError(f"{path}: field 'shapedirs' has {out['shapedirs'].shape[2]} shape components, need {NUM_BETAS}")
    return out


# pose format -> converter of (B, J, *) to axis-angle (B, J, 3)
POSE_FORMATS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "axis_angle": lambda pose: pose,
    "rot6d": rot6d_to_axis_angle,
    "matrix": matrix_to_axis_angle,
}
_POSE_ELEM_SHAPE = {"axis_angle": (3,), "rot6d": (6,), "matrix": (3, 3)}


@dataclass
class HandOutput:
    vertices: torch.Tensor  # (B, 778, 3) metres
    joints: torch.Tensor  # (B, 21, 3) metres, InterWild order, regressed from the mesh
    # (B, 16, 3) MANO's own joints (MANO_JOINT_NAMES order) posed by the kinematic chain: the rest
    # joints of the shaped template (J_regressor, before pose blend shapes) moved by the joint
    # transforms, as smplx's and manopth's layers return them
    skeleton: torch.Tensor | None = None


@dataclass
class TwoHandOutput:
    vertices: torch.Tensor  # (B, 1556, 3): right hand 0..777, left 778..1555
    joints: torch.Tensor  # (B, 42, 3): right 0..20, left 21..41
    right: HandOutput
    left: HandOutput


class HandModel(nn.Module):
    """Both MANO hands through smplx.

    Args:
        mano_dir: folder with MANO_RIGHT.pkl and MANO_LEFT.pkl.
        flat_hand_mean: False (as InterHand2.6M's annotations and InterWild) means a zero hand
            pose is MANO's mean relaxed hand; True means a zero pose is the flat template.
    """

    def __init__(self, mano_dir: str | Path, flat_hand_mean: bool = False, dtype: torch.dtype = torch.float32):
        super().__init__()
        folder = Path(mano_dir)
        if not folder.is_dir():
            raise MANOFileError(f"MANO folder not found: {folder}; {_where_to_get(folder)}")
        self.mano_dir = folder
        self.flat_hand_mean = flat_hand_mean
        layers = {}
        for side in SIDES:
            data = load_mano_file(folder / f"MANO_{side.upper()}.pkl")
            with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a note about 10 betas
                layers[side] = smplx.MANO(
                    model_path=str(folder),
                    is_rhand=side == "right",
                    data_struct=Struct(**data),
                    use_pca=False,
                    flat_hand_mean=flat_hand_mean,
                    num_betas=NUM_BETAS,
                    create_global_orient=False,
                    create_hand_pose=False,
                    create_betas=False,
                    create_transl=False,
                    dtype=dtype,
                )
            # full PCA basis (smplx keeps it only with use_pca=True)
            layers[side].register_buffer("pca_basis", torch.tensor(data["hands_components"], dtype=dtype))
        self.layers = nn.ModuleDict(layers)
        self.left_shapedirs_fixed = self._fix_left_shapedirs()
        for side in SIDES:
            layer = self.layers[side]
            tips = torch.zeros(5, NUM_VERTS, dtype=dtype)
            tips[torch.arange(5), torch.tensor(FINGERTIP_VERTEX_IDS)] = 1.0
            regressor = torch.cat([layer.J_regressor, tips])[list(MANO21_FROM_MANO16_PLUS_TIPS)]
            self.register_buffer(f"joint_regressor_{side}", regressor, persistent=False)
            self.register_buffer(f"faces_{side}", layer.faces_tensor.long(), persistent=False)
        self.register_buffer("faces_two_hand", torch.cat([self.faces_right, self.faces_left + NUM_VERTS]), persistent=False)
        # the rest wrist J0 is linear in the betas: J0 = j0 (v_template + shapedirs betas) = a + D betas
        self.rest_root_affine: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for side in SIDES:
            layer = self.layers[side]
            j0 = layer.J_regressor[0].double()
            template, dirs = j0 @ layer.v_template.double(), torch.einsum("v,vdk->dk", j0, layer.shapedirs.double())
            self.rest_root_affine[side] = (template.numpy(), dirs.numpy())
            self.register_buffer(f"rest_root_template_{side}", template.to(dtype), persistent=False)
            self.register_buffer(f"rest_root_dirs_{side}", dirs.to(dtype), persistent=False)

    def _fix_left_shapedirs(self) -> bool:
        """The official MANO_LEFT.pkl has shapedirs[:, 0, :] with the right hand's sign; flip it
        only when that is detected (the left x-components then nearly equal the right ones)."""
        right, left = self.layers["right"].shapedirs, self.layers["left"].shapedirs
        if torch.sum(torch.abs(left[:, 0, :] - right[:, 0, :])) < 1:
            left[:, 0, :] *= -1
            return True
        return False

    def joint_regressor(self, side: str) -> torch.Tensor:
        """(21, 778) regressor of InterWild's 21 joints from one hand's mesh."""
        return getattr(self, f"joint_regressor_{side}")

    def regress_joints(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, 778, 3) right-hand mesh -> (B, 21, 3), or (B, 1556, 3) two-hand mesh -> (B, 42, 3)."""
        if vertices.shape[-2] == NUM_VERTS:
            return self.joint_regressor("right") @ vertices
        if vertices.shape[-2] == 2 * NUM_VERTS:
            return torch.cat(
                [self.joint_regressor("right") @ vertices[..., :NUM_VERTS, :], self.joint_regressor("left") @ vertices[..., NUM_VERTS:, :]],
                dim=-2,
            )
        raise ValueError(f"vertices must have {NUM_VERTS} or {2 * NUM_VERTS} points, got shape {tuple(vertices.shape)}")

    def hand(
        self,
        side: str,
        betas: torch.Tensor,
        global_orient: torch.Tensor,
        hand_pose: torch.Tensor,
        transl: torch.Tensor | None = None,
        pose_format: str = "axis_angle",
    ) -> HandOutput:
        """One hand. `pose_format` is 'axis_angle' (global_orient (B,3), hand_pose (B,45)),
        'rot6d' ((B,6), (B,15,6)), 'matrix' ((B,3,3), (B,15,3,3)) or 'pca' (global_orient
        (B,3) axis-angle, hand_pose (B,N) coefficients of the first N PCA components)."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        layer = self.layers[side]
        batch = betas.shape[0]
        if pose_format == "pca":
            n = hand_pose.shape[-1]
            hand_pose = hand_pose @ layer.pca_basis[:n]
        elif pose_format in POSE_FORMATS:
            convert = POSE_FORMATS[pose_format]
            elem = _POSE_ELEM_SHAPE[pose_format]
            global_orient = convert(global_orient.reshape(batch, 1, *elem)).reshape(batch, 3)
            hand_pose = convert(hand_pose.reshape(batch, 15, *elem)).reshape(batch, 45)
        else:
            raise ValueError(f"pose_format must be one of {[*POSE_FORMATS, 'pca']}, got {pose_format!r}")
        out = layer(betas=betas, global_orient=global_orient, hand_pose=hand_pose, transl=transl)
        return HandOutput(vertices=out.vertices, joints=self.joint_regressor(side) @ out.vertices, skeleton=out.joints)

    def rest_root(self, side: str, betas: torch.Tensor) -> torch.Tensor:
        """(B, 3) wrist joint of the shaped rest mesh: the point smplx rotates global_orient about.
        (Linear in the betas, `rest_root_affine[side]` = (a (3,), D (3, 10)) in float64 numpy.)"""
        return getattr(self, f"rest_root_template_{side}") + betas @ getattr(self, f"rest_root_dirs_{side}").T

    def to_camera(
        self, side: str, global_orient: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-express MANO parameters given in a world frame in a camera frame X_cam = rot X + trans.

        Args: global_orient (B,3) axis-angle, betas (B,10), transl (B,3) m, rot (B,3,3), trans (B,3) m.
        Returns (global_orient_cam, transl_cam) such that the MANO mesh of the new parameters (same
        hand pose and shape) equals rot @ mesh_world + trans exactly. Since smplx rotates about the
        rest wrist J0: transl_cam = rot (J0 + transl) + trans - J0.
        """
        orient_cam = matrix_to_axis_angle(rot @ axis_angle_to_matrix(global_orient))
        root = self.rest_root(side, betas)
        transl_cam = (rot @ (root + transl)[..., None])[..., 0] + trans - root
        return orient_cam, transl_cam

    def forward(self, right: dict, left: dict, pose_format: str = "axis_angle") -> TwoHandOutput:
        """Both hands; `right` / `left` hold the keyword arguments of `hand` (betas,
        global_orient, hand_pose, optional transl)."""
        r = self.hand("right", pose_format=pose_format, **right)
        lft = self.hand("left", pose_format=pose_format, **left)
        return TwoHandOutput(
            vertices=torch.cat([r.vertices, lft.vertices], dim=1),
            joints=torch.cat([r.joints, lft.joints], dim=1),
            right=r,
            left=lft,
        )
