"""Write reader samples as indexed shards (the cache job's format) for tests."""
from __future__ import annotations

from pathlib import Path

from handrecon.data.shards import build_index, encode_image, labels_from_sample, write_shard


def write_test_shards(samples: list[dict], root: Path, per_shard: int) -> Path:
    for k in range(0, len(samples), per_shard):
        write_shard(
            root / f"shard-{k // per_shard:06d}.tar",
            [
                (
                    f"s{int(s['sample_id']):06d}",
                    encode_image(s["image"], "JPEG"),
                    encode_image(s["image"][..., 0], "PNG"),
                    labels_from_sample(s, prompt="two hands", seed=int(s["sample_id"])),
                )
                for s in samples[k : k + per_shard]
            ],
        )
    build_index(root)
    return root
