"""Joint orders, names and index maps for MANO, InterWild, InterHand2.6M and COCO-WholeBody.

Every conversion between joint orders in the toolkit goes through the tables here.
"""
from __future__ import annotations

NUM_VERTS = 778
NUM_FACES = 1538
NUM_JOINTS = 21  # per hand, InterWild order
NUM_BETAS = 10

# MANO's own 16 joints (order of J_regressor rows and of the kinematic tree).
MANO_JOINT_NAMES = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)
# Parent of each MANO joint; the wrist is the root (-1).
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

# Fingertip vertices in InterWild's order (thumb, index, middle, ring, pinky). The stand-in
# model places its fingertip apexes at these same ids, so code runs unchanged on both.
FINGERTIP_VERTEX_IDS = (745, 317, 445, 556, 673)

# InterWild's 21 joints per hand: wrist first, then thumb/index/middle/ring/pinky 1..4 (4 = tip).
JOINT_NAMES = (
    "wrist",
    "thumb1", "thumb2", "thumb3", "thumb4",
    "index1", "index2", "index3", "index4",
    "middle1", "middle2", "middle3", "middle4",
    "ring1", "ring2", "ring3", "ring4",
    "pinky1", "pinky2", "pinky3", "pinky4",
)
# Row i of the 21-joint set is row MANO21_FROM_MANO16_PLUS_TIPS[i] of [16 MANO joints; 5 tips].
MANO21_FROM_MANO16_PLUS_TIPS = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)

# InterHand2.6M annotation order per hand: tip first, wrist last
# (thumb4..thumb1, index4..1, middle4..1, ring4..1, pinky4..1, wrist); right 0-20, left 21-41.
IH26M_JOINT_NAMES = tuple(
    f"{finger}{k}" for finger in ("thumb", "index", "middle", "ring", "pinky") for k in (4, 3, 2, 1)
) + ("wrist",)
# joints_ours[i] = joints_ih26m[IH26M_TO_OURS[i]] (per hand)
IH26M_TO_OURS = tuple(IH26M_JOINT_NAMES.index(name) for name in JOINT_NAMES)
# joints_ih26m[i] = joints_ours[OURS_TO_IH26M[i]] (per hand)
OURS_TO_IH26M = tuple(JOINT_NAMES.index(name) for name in IH26M_JOINT_NAMES)

# COCO-WholeBody hand keypoints (`righthand_kpts` / `lefthand_kpts`, 21 x (x, y, score) each):
# wrist, then thumb/index/middle/ring/pinky 1..4 (4 = tip), the order InterWild's MSCOCO joint set
# names. It is our order; the map below is the identity, kept so the conversion is explicit.
COCO_HAND_JOINT_NAMES = JOINT_NAMES
# joints_ours[i] = keypoints_coco[COCO_TO_OURS[i]] (per hand)
COCO_TO_OURS = tuple(COCO_HAND_JOINT_NAMES.index(name) for name in JOINT_NAMES)

# Skeleton edges in our 21-joint order (for drawing).
SKELETON_21 = tuple(
    (0 if k == 0 else 1 + 4 * f + k - 1, 1 + 4 * f + k) for f in range(5) for k in range(4)
)
