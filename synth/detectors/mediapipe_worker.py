"""MediaPipe Hands over a batch of images, run in MediaPipe's own environment (numpy < 2).

    python mediapipe_worker.py IMAGES.npz SCORES.json MIN_CONFIDENCE

Writes, per image, the highest handedness confidence of the detected hands (0 when none).
Imports nothing from the toolkit.
"""
import json
import sys

import numpy as np


def main(src: str, dst: str, min_confidence: float) -> None:
    import mediapipe as mp

    images = np.load(src)
    scores = []
    with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, min_detection_confidence=min_confidence) as hands:
        for name in sorted(images.files, key=lambda n: int(n.split("_")[-1])):
            found = hands.process(np.ascontiguousarray(images[name]))
            best = max((h.classification[0].score for h in found.multi_handedness or []), default=0.0)
            scores.append(float(best))
    with open(dst, "w") as fh:
        json.dump(scores, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
