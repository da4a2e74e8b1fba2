"""Tests for handrecon.config (schemas, YAML, --set overrides) and handrecon.cli (tool plumbing)."""

from __future__ import annotations

import argparse
import enum
import hashlib
import importlib
import importlib.util
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from handrecon.cli import add_config_args, config_from_args, run_tool
from handrecon.config import (
    ConfigError,
    FieldError,
    UserError,
    build_section,
    check_fields,
    commented_yaml,
    config_hash,
    config_to_dict,
    field_comments,
    load_config,
    save_config,
    to_yaml,
)

REPO = Path(__file__).resolve().parents[1]


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclass
class TrainCfg:
    lr: float = 1e-3
    steps: int = 100
    warmup: int = 0
    device: str = field(default="cpu", metadata={"choices": ("cpu", "cuda", "auto")})


@dataclass
class DataCfg:
    root: Path = Path("data")
    image_size: tuple[int, int] = (256, 256)
    subsets: list[str] = field(default_factory=lambda: ["train"])
    max_items: Optional[int] = None


@dataclass
class Cfg:
    name: str = "run"
    seed: int = 0
    deterministic: bool = False
    mode: Mode = Mode.FAST
    kind: Literal["mano", "standin"] = "mano"
    train: TrainCfg = field(default_factory=TrainCfg)
    data: DataCfg = field(default_factory=DataCfg)
    extra: Optional[TrainCfg] = None


@dataclass
class Required:
    data_root: str


@dataclass
class Checked:
    lo: int = 0
    hi: int = 1

    def __post_init__(self) -> None:
        if self.lo >= self.hi:
            raise ValueError(f"lo ({self.lo}) must be < hi ({self.hi})")


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- layering


def test_defaults_come_through():
    cfg = load_config(Cfg)
    assert cfg == Cfg()
    assert type(cfg.train) is TrainCfg and type(cfg.data) is DataCfg
    assert cfg.data.image_size == (256, 256) and cfg.extra is None


def test_yaml_overrides_defaults_and_keeps_the_rest(tmp_path):
    path = write(tmp_path, """
        name: exp1
        train:
          lr: 1e-4        # YAML 1.1 would read this as a string
        data:
          image_size: [128, 96]
          root: /datasets/hands
    """)
    cfg = load_config(Cfg, path)
    assert cfg.name == "exp1"
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 100  # untouched default inside a touched section
    assert cfg.data.image_size == (128, 96)
    assert cfg.data.root == Path("/datasets/hands")


def test_set_overrides_yaml_nested_and_in_order(tmp_path):
    path = write(tmp_path, "train: {lr: 0.5, steps: 7}\nseed: 3\n")
    cfg = load_config(Cfg, path, ["train.lr=0.25", "seed=4", "seed=5", "data.subsets=[a, b]"])
    assert cfg.train.lr == 0.25 and cfg.train.steps == 7
    assert cfg.seed == 5  # last one wins
    assert cfg.data.subsets == ["a", "b"]


def test_set_yaml_scalars_and_sections():
    cfg = load_config(
        Cfg,
        overrides=[
            "deterministic=true",
            "data.max_items=null",
            "train.lr=1e-4",
            "extra.steps=9",  # a null Optional section starts from its defaults
            "train={warmup: 5}",  # a mapping merges into the section
            "mode=slow",
            "kind=standin",
        ],
    )
    assert cfg.deterministic is True and cfg.data.max_items is None
    assert cfg.train.lr == 1e-4 and cfg.train.warmup == 5
    assert cfg.extra == TrainCfg(steps=9)
    assert cfg.mode is Mode.SLOW and cfg.kind == "standin"


def test_set_str_field_keeps_raw_text():
    assert load_config(Cfg, overrides=["name=007"]).name == "007"
    assert load_config(Cfg, overrides=["name=true"]).name == "true"
    assert load_config(Cfg, overrides=["name=1e-4"]).name == "1e-4"
    assert load_config(Cfg, overrides=["name="]).name == ""


# ---------------------------------------------------------------- types


def test_int_is_accepted_for_float():
    cfg = load_config(Cfg, overrides=["train.lr=1"])
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float


def test_bad_float_names_key_and_value():
    message = error_of(Cfg, overrides=["train.lr=abc"])
    assert message.startswith("--set train.lr=abc:")
    assert "'train.lr'" in message and "'abc'" in message and "float" in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("seed=1.5", "expected int for 'seed', got 1.5"),
        ("seed=true", "expected int for 'seed', got true"),
        ("deterministic=1", "expected bool for 'deterministic'"),
        ("data.image_size=[1, 2, 3]", "'data.image_size'"),
        ("data.subsets=[a, 1]", "'data.subsets[1]', got 1"),
        ("data.max_items=x", "expected int or null for 'data.max_items'"),
        ("train=3", "expected a mapping for section 'train', got 3"),
        ("train.lr.x=1", "'train.lr' is not a section"),
    ],
)
def test_type_errors(override, expected):
    assert expected in error_of(Cfg, overrides=[override])


def test_yaml_type_error_names_file_line_and_key(tmp_path):
    path = write(tmp_path, "name: ok\ntrain:\n  steps: many\n")
    message = error_of(Cfg, path)
    assert message.startswith(f"{path}:3:")
    assert "'train.steps'" in message and "'many'" in message


def test_yaml_str_field_must_be_a_string(tmp_path):
    # A bare `1.10` would silently become "1.1"; the user must quote it.
    assert "expected str for 'name'" in error_of(Cfg, write(tmp_path, "name: 1.10\n"))


# ---------------------------------------------------------------- unknown keys and choices


def test_unknown_key_in_yaml(tmp_path):
    path = write(tmp_path, "train:\n  lrr: 0.1\n")
    message = error_of(Cfg, path)
    assert str(path) in message
    assert "unknown key 'train.lrr'" in message
    assert "valid keys under 'train': device, lr, steps, warmup" in message
    assert "did you mean 'train.lr'" in message


def test_unknown_key_in_set():
    message = error_of(Cfg, overrides=["train.lrr=0.1"])
    assert message.startswith("--set train.lrr=0.1:")
    assert "unknown key 'train.lrr'" in message
    assert "valid keys under 'train': device, lr, steps, warmup" in message


def test_unknown_top_level_section_in_set():
    message = error_of(Cfg, overrides=["trian.lr=0.1"])
    assert "unknown key 'trian'" in message and "valid keys at top level:" in message
    assert "train" in message


def test_wrong_choice_lists_choices(tmp_path):
    message = error_of(Cfg, overrides=["train.device=tpu"])
    assert "'train.device'" in message and "'tpu'" in message
    assert "choices: cpu, cuda, auto" in message
    assert "choices: fast, slow" in error_of(Cfg, write(tmp_path, "mode: medium\n"))
    assert "choices: mano, standin" in error_of(Cfg, overrides=["kind=smplx"])


def test_bad_override_syntax():
    assert "expected KEY=VALUE" in error_of(Cfg, overrides=["seed"])
    assert "put it before --set" in error_of(Cfg, overrides=["configs/x.yaml"])
    assert "expected KEY=VALUE" in error_of(Cfg, overrides=["train..lr=1"])


def test_required_field_and_post_init_checks():
    assert "missing required key 'data_root'" in error_of(Required)
    assert load_config(Required, overrides=["data_root=/d"]).data_root == "/d"
    assert "lo (3) must be < hi (1)" in error_of(Checked, overrides=["lo=3"])


# ---------------------------------------------------------------- files


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.yaml"
    message = error_of(Cfg, path)
    assert str(path) in message and "not found" in message


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "name: a\ntrain: [1, 2\nseed: 3\n")
    message = error_of(Cfg, path)
    assert message.startswith(f"{path}:") and "invalid YAML" in message
    assert message.split(":")[1].isdigit()  # a line number follows the file name


def test_non_mapping_and_duplicate_keys_rejected(tmp_path):
    assert "expected a mapping" in error_of(Cfg, write(tmp_path, "- a\n- b\n"))
    message = error_of(Cfg, write(tmp_path, "seed: 1\nseed: 2\n", "dup.yaml"))
    assert "dup.yaml:2:" in message and "duplicate key 'seed'" in message


def test_empty_file_means_defaults(tmp_path):
    assert load_config(Cfg, write(tmp_path, "# nothing\n")) == Cfg()


# ---------------------------------------------------------------- saving, dicts, hashing


def test_save_load_round_trip(tmp_path):
    tricky = ["name=1e-4", "data.subsets=['true', 'null', '2024-01-01', '3']", "mode=slow",
              "data.root=/x y/z", "extra.lr=0.5", "data.max_items=7", "train.lr=1e-10"]
    cfg = load_config(Cfg, overrides=tricky)
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(Cfg, path) == cfg
    assert path.read_text() == to_yaml(cfg)
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left behind


def test_config_to_dict_is_plain():
    d = config_to_dict(load_config(Cfg, overrides=["mode=slow"]))
    assert d["train"] == {"lr": 1e-3, "steps": 100, "warmup": 0, "device": "cpu"}
    assert d["data"]["root"] == "data" and d["data"]["image_size"] == [256, 256]
    assert d["mode"] == "slow" and d["extra"] is None


def test_config_hash(tmp_path):
    a = write(tmp_path, "seed: 1\ntrain: {lr: 0.1, steps: 5}\n", "a.yaml")
    b = write(tmp_path, "train: {steps: 5, lr: 0.1}\nseed: 1\n", "b.yaml")
    ha, hb = config_hash(load_config(Cfg, a)), config_hash(load_config(Cfg, b))
    assert ha == hb and len(ha) == 16 and int(ha, 16) >= 0
    assert config_hash(load_config(Cfg, a, ["train.steps=6"])) != ha
    assert config_hash(load_config(Cfg, a, ["train.steps=5"])) == ha
    assert config_hash(Cfg()) == config_hash(load_config(Cfg))


@dataclass
class Tiny:
    z: int = 1
    a: float = 0.5


def test_config_hash_is_sha256_of_sorted_json():
    # Pinned format: changing it silently invalidates every cache keyed by config_hash.
    expected = hashlib.sha256(b'{"a":0.5,"z":1}').hexdigest()[:16]
    assert config_hash(Tiny()) == expected


def test_no_shared_state_between_loads():
    a = load_config(Cfg, overrides=["train.lr=0.1", "data.subsets=[x]"])
    b = load_config(Cfg, overrides=["train.lr=0.2"])
    assert (a.train.lr, b.train.lr) == (0.1, 0.2)
    assert b.data.subsets == ["train"]
    b.data.subsets.append("mutated")
    assert load_config(Cfg).data.subsets == ["train"]  # defaults are not aliased


# ---------------------------------------------------------------- cli


def make_parser(default_config: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Test tool.")
    add_config_args(parser, default_config)
    return parser


def test_add_config_args_collects_overrides(tmp_path):
    path = write(tmp_path, "seed: 1\n")
    args = make_parser().parse_args([str(path), "--set", "seed=2", "train.lr=0.5", "--set", "name=x"])
    assert args.config == str(path) and args.overrides == ["seed=2", "train.lr=0.5", "name=x"]
    cfg = config_from_args(Cfg, args)
    assert (cfg.seed, cfg.train.lr, cfg.name) == (2, 0.5, "x")
    bare = make_parser(str(path)).parse_args([])
    assert bare.config == str(path) and bare.overrides == []
    assert config_from_args(Cfg, bare).seed == 1


def test_run_tool_reports_user_errors(capsys):
    def main() -> int:
        config_from_args(Cfg, make_parser().parse_args(["--set", "train.lrr=1"]))
        return 0

    with pytest.raises(SystemExit) as info:
        run_tool(main)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set train.lrr=1: unknown key 'train.lrr'")
    assert err.count("\n") == 1

    def fails(message: str) -> None:
        raise UserError(message)

    with pytest.raises(SystemExit) as info:
        run_tool(fails, "two\nlines")
    assert info.value.code == 2 and capsys.readouterr().err == "error: two lines\n"


def test_run_tool_exit_codes_and_bugs():
    with pytest.raises(SystemExit) as info:
        run_tool(lambda: None)
    assert info.value.code == 0
    with pytest.raises(SystemExit) as info:
        run_tool(lambda: 3)
    assert info.value.code == 3
    with pytest.raises(ZeroDivisionError):  # bugs are not swallowed
        run_tool(lambda: 1 / 0)


def test_tool_subprocess_error_line(tmp_path):
    script = textwrap.dedent("""
        import argparse, dataclasses
        from handrecon.cli import add_config_args, config_from_args, run_tool

        @dataclasses.dataclass
        class Train:
            lr: float = 0.1

        @dataclasses.dataclass
        class Cfg:
            train: Train = dataclasses.field(default_factory=Train)

        def main():
            parser = argparse.ArgumentParser(description="Demo tool.")
            add_config_args(parser)
            print(config_from_args(Cfg, parser.parse_args()).train.lr)

        run_tool(main)
    """)
    cmd = [sys.executable, "-c", script]
    ok = subprocess.run([*cmd, "--set", "train.lr=0.5"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == "0.5", ok.stderr
    bad = subprocess.run([*cmd, "--set", "train.lr=abc"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == ["error: --set train.lr=abc: expected float for 'train.lr', got 'abc'"]


@dataclass
class MixData:
    ratios: dict[str, float] = field(default_factory=lambda: {"real": 1.0})


@dataclass
class MixCfg:
    data: MixData = field(default_factory=MixData)


def test_mapping_fields_replace_whole_or_set_one_entry(tmp_path):
    Cfg = MixCfg
    assert load_config(Cfg, None, ["data.ratios.synth=0.3"]).data.ratios == {"real": 1.0, "synth": 0.3}
    assert load_config(Cfg, None, ["data.ratios={synth: 1}"]).data.ratios == {"synth": 1.0}
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  ratios: {real: 0.7, synth: 0.3}\n")
    cfg = load_config(Cfg, path, ["data.ratios.real=0.5"])
    assert cfg.data.ratios == {"real": 0.5, "synth": 0.3}
    saved = tmp_path / "saved.yaml"
    save_config(cfg, saved)
    assert load_config(Cfg, saved) == cfg
    with pytest.raises(ConfigError, match=r"expected float for 'data\.ratios\.synth', got 'abc'"):
        load_config(Cfg, None, ["data.ratios.synth=abc"])
    with pytest.raises(ConfigError, match="expected mapping of float for 'data.ratios'"):
        load_config(Cfg, None, ["data.ratios=3"])


# ---------------------------------------------------------------- dict[str, Any] and build_section


@dataclass
class Arch:
    """What a `dict[str, Any]` field's values are checked against, chosen by a sibling field in practice."""

    width: int = 8  # >= 1
    tag: str = "a"
    size: tuple[int, int] = (2, 2)
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "width")
        check_fields(self, ">= 0", "weights")


def _resolved_arch(picked: Picked) -> Arch:
    return build_section(Arch, picked.options, base={"width": 4})


@dataclass
class Picked:
    options: dict[str, Any] = field(default_factory=dict, metadata={"resolved": _resolved_arch})  # fields of Arch

    def __post_init__(self) -> None:
        checked = build_section(Arch, self.options, "options", base={"width": 4})
        self.options = {key: getattr(checked, key) for key in self.options}


@dataclass
class Loose:
    extra: dict[str, Any] = field(default_factory=dict)  # anything, unchecked


@dataclass
class AnyCfg:
    picked: Picked = field(default_factory=Picked)
    loose: Loose = field(default_factory=Loose)


@dataclass
class AnyOuter:
    inner: AnyCfg = field(default_factory=AnyCfg)


def test_any_values_take_any_yaml_and_dotted_keys_merge_deeply(tmp_path):
    path = write(tmp_path, "loose:\n  extra: {a: 1, b: {c: [1, 2], d: x}, e: null}\n")
    cfg = load_config(AnyCfg, path, ["loose.extra.b.d=007", "loose.extra.b.f.g=true", "loose.extra.h=[1, {i: 2}]"])
    # nothing checks these values: a --set value is its parsed YAML (007 -> 7), never a wrapper
    assert cfg.loose.extra == {"a": 1, "b": {"c": [1, 2], "d": 7, "f": {"g": True}}, "e": None, "h": [1, {"i": 2}]}
    assert load_config(AnyCfg, path, ["loose.extra={z: 1}"]).loose.extra == {"z": 1}  # a whole mapping replaces
    assert load_config(AnyCfg, path, ["loose.extra.b=3"]).loose.extra == {"a": 1, "b": 3, "e": None}
    assert load_config(AnyCfg, path, ["loose.extra.a.b=3"]).loose.extra["a"] == {"b": 3}  # a scalar becomes a mapping
    saved = save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(AnyCfg, saved) == cfg
    assert error_of(AnyCfg, overrides=["loose.extra=3"]) == "--set loose.extra=3: expected mapping for 'loose.extra', got 3"


def test_options_are_checked_by_their_schema_with_raw_set_text(tmp_path):
    path = write(tmp_path, "picked:\n  options: {size: [3, 4], weights: {a: 1}}\n")
    cfg = load_config(AnyCfg, path, ["picked.options.tag=007", "picked.options.weights.b=2"])
    # coerced (a tuple, floats, the raw text for a str) and only the keys given: width keeps the base's 4
    assert cfg.picked.options == {"size": (3, 4), "weights": {"a": 1.0, "b": 2.0}, "tag": "007"}
    assert _resolved_arch(cfg.picked) == Arch(width=4, tag="007", size=(3, 4), weights={"a": 1.0, "b": 2.0})
    assert load_config(AnyCfg, save_config(cfg, tmp_path / "saved.yaml")) == cfg
    assert load_config(AnyCfg, path, ["picked.options.weights={c: 0}"]).picked.options["weights"] == {"c": 0.0}
    assert error_of(AnyCfg, overrides=["picked.options.width=0"]) == "picked.options.width must be >= 1, got 0"
    assert error_of(AnyCfg, overrides=["picked.options.weights.a=-1"]) == "picked.options.weights.a must be >= 0, got -1.0"
    assert error_of(AnyCfg, overrides=["picked.options.width=x"]) == "expected int for 'picked.options.width', got 'x'"
    assert error_of(AnyCfg, overrides=["picked.options.size=[1]"]) == (
        "expected list of 2 values (int, int) for 'picked.options.size', got [1]"
    )
    assert error_of(AnyCfg, overrides=["picked.options.widht=2"]) == (
        "unknown key 'picked.options.widht' (valid keys under 'picked.options': size, tag, weights, width; "
        "did you mean 'picked.options.width'?)"
    )
    # nested deeper, the key is still the full one
    assert error_of(AnyOuter, overrides=["inner.picked.options.width=0"]) == "inner.picked.options.width must be >= 1, got 0"
    # direct construction: the key relative to the dataclass, as a FieldError's
    with pytest.raises(ConfigError, match=r"^options\.width must be >= 1, got 0$"):
        Picked(options={"width": 0})
    assert Picked(options={"size": [5, 6]}).options == {"size": (5, 6)}


def test_build_section_merges_over_base_and_defaults():
    assert build_section(Arch, {"tag": "b"}, "arch", base={"width": 3, "tag": "x"}) == Arch(width=3, tag="b")
    assert build_section(Arch, {}) == Arch()
    with pytest.raises(ConfigError, match=r"^arch\.width must be >= 1, got 0$"):
        build_section(Arch, {"width": 0}, "arch")
    with pytest.raises(ConfigError, match=r"^unknown key 'arch\.colour' \(valid keys under 'arch': size, tag, weights, width\)$"):
        build_section(Arch, {"colour": 1}, "arch")
    with pytest.raises(ConfigError, match=r"^expected a mapping for 'arch', got 3$"):
        build_section(Arch, 3, "arch")
    with pytest.raises(TypeError, match=r"^base values of Arch: expected int for 'arch\.width', got 'wide'$"):  # a code bug
        build_section(Arch, {}, "arch", base={"width": "wide"})


def test_schemas_made_in_code_comment_their_fields_through_metadata():
    import dataclasses

    made = dataclasses.make_dataclass("Made", [("size", int, field(default=1, metadata={"comment": "cells; >= 1"})), ("name", str, "x")])
    assert field_comments(made) == {"size": "cells; >= 1"}
    assert commented_yaml(made()) == "size: 1  # cells; >= 1\nname: x\n"


def test_commented_yaml_lists_resolved_values_as_comments(tmp_path):
    cfg = load_config(AnyCfg, None, ["picked.options.tag=b"])
    text = commented_yaml(cfg)
    assert "  options: {tag: b}  # fields of Arch\n  # options, resolved (Arch):\n  #   width: 4  # >= 1\n  #   tag: b\n" in text
    path = tmp_path / "printed.yaml"
    path.write_text(text)
    assert load_config(AnyCfg, path) == cfg


# ---------------------------------------------------------------- range checks (check_fields)


@dataclass
class Ranged:
    count: int = 1
    limit: Optional[int] = None
    rate: float = 0.5
    size: tuple[int, int] = (2, 2)
    weights: dict[str, float] = field(default_factory=dict)
    span: tuple[float, float] = (0.1, 0.2)

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "count", "limit", "size")
        check_fields(self, "in [0, 1)", "rate")
        check_fields(self, ">= 0", "weights")
        check_fields(self, "lo <= hi", "span")


@dataclass
class RangedOuter:
    inner: Ranged = field(default_factory=Ranged)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("inner.count=0", "inner.count must be >= 1, got 0"),
        ("inner.limit=-1", "inner.limit must be >= 1 or null, got -1"),
        ("inner.rate=1.0", "inner.rate must be in [0, 1), got 1.0"),
        ("inner.rate=.nan", "inner.rate must be finite, got nan"),
        ("inner.rate=-.inf", "inner.rate must be finite, got -inf"),
        ("inner.size=[3, 0]", "inner.size[1] must be >= 1, got 0"),
        ("inner.weights.a=-1", "inner.weights.a must be >= 0, got -1.0"),
        ("inner.span=[2, 1]", "inner.span must be lo <= hi, got (2.0, 1.0)"),
    ],
)
def test_check_fields_errors_name_the_full_key_and_value(override, expected):
    assert error_of(RangedOuter, overrides=[override]) == expected


def test_check_fields_passes_good_values_and_guards_direct_construction():
    cfg = load_config(RangedOuter, overrides=["inner.limit=5", "inner.rate=0", "inner.weights={a: 0, b: 2}", "inner.span=[1, 1]"])
    assert cfg.inner.limit == 5 and cfg.inner.weights == {"a": 0.0, "b": 2.0}
    with pytest.raises(FieldError, match=r"^count must be >= 1, got 0$"):  # no section outside the loader
        Ranged(count=0)
    assert FieldError(("size", 1), ">= 1", 0).message(("data",)) == "data.size[1] must be >= 1, got 0"


@pytest.mark.parametrize(
    "rule, good, bad", [("> 0", 1e-9, 0.0), ("in (0, 1]", 1.0, 0.0), ("in [1, 100]", 100, 101), ("finite", -5.0, float("inf"))]
)
def test_check_fields_rules(rule, good, bad):
    @dataclass
    class One:
        x: float = good

    check_fields(One(), rule, "x")
    with pytest.raises(FieldError, match=rf"^x must be {re.escape(rule)}, got {bad}$"):
        check_fields(One(x=bad), rule, "x")
    with pytest.raises(TypeError, match="unknown range rule"):
        check_fields(One(), "positive", "x")


# ---------------------------------------------------------------- the project's schemas


def schema(spec: str) -> type:
    """'package.module:Class' or 'tools/x.py:Class', imported when the test runs (this file stays
    quick to collect)."""
    module, name = spec.split(":")
    if module.endswith(".py"):  # a tool: registered under its own name (dataclasses look their module up)
        key = "tools." + Path(module).stem
        if key not in sys.modules:
            spec = importlib.util.spec_from_file_location(key, REPO / module)
            sys.modules[key] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(sys.modules[key])
        return getattr(sys.modules[key], name)
    return getattr(importlib.import_module(module), name)


EXPERIMENT = "handrecon.engine.config:Experiment"
GENERATOR = "synth.train:GeneratorExperiment"
BASE = "synth.pretrain_base:BasePretrainExperiment"
SEMANTICS = "synth.semantics.chain:SemanticsConfig"
SYNTH_SOURCE = "data.sources.synth={kind: shards, root: s}"

BAD_VALUES = [
    # (schema, overrides, the one-line error)
    (EXPERIMENT, ["data.batch_size=-4"], "data.batch_size must be >= 1, got -4"),
    (EXPERIMENT, ["data.num_workers=-1"], "data.num_workers must be >= 0, got -1"),
    (EXPERIMENT, ["data.seed=-1"], "data.seed must be >= 0, got -1"),
    (EXPERIMENT, ["data.epoch_source=null", "data.steps_per_epoch=0"], "data.steps_per_epoch must be >= 1 or null, got 0"),
    (EXPERIMENT, [SYNTH_SOURCE, "data.ratios.synth=-0.3"], "data.ratios.synth must be in [0, 1], got -0.3"),
    (EXPERIMENT, ["data.ratios.real=.inf"], "data.ratios.real must be finite, got inf"),
    (EXPERIMENT, [SYNTH_SOURCE, "data.ratios={real: 0.7, synth: 0.5}"],
     "data.ratios must be shares summing to 1 (they sum to 1.2; normalised: {'real': 0.583333, 'synth': 0.416667}), "
     "got {'real': 0.7, 'synth': 0.5}"),
    (EXPERIMENT, ["data.epoch_source=null", "data.steps_per_epoch=5", "data.ratios.real=0"],
     "data.ratios must be shares summing to 1 (they sum to 0), got {'real': 0.0}"),
    (EXPERIMENT, [SYNTH_SOURCE, "data.ratios.synth=0", "data.epoch_source=synth"],
     "data.epoch_source must be a source with a ratio > 0 (an epoch over it would never end), got 'synth'"),
    (EXPERIMENT, ["val.max_samples=-1"], "val.max_samples must be >= 1 or null, got -1"),
    (EXPERIMENT, ["val.batch_size=0"], "val.batch_size must be >= 1, got 0"),
    (EXPERIMENT, ["val.images=-1"], "val.images must be >= 0, got -1"),
    (EXPERIMENT, ["optim.lr=-1e-3"], "optim.lr must be > 0, got -0.001"),
    (EXPERIMENT, ["optim.lr=0"], "optim.lr must be > 0, got 0.0"),
    (EXPERIMENT, ["optim.lr=.nan"], "optim.lr must be finite, got nan"),
    (EXPERIMENT, ["optim.weight_decay=-0.1"], "optim.weight_decay must be >= 0, got -0.1"),
    (EXPERIMENT, ["optim.betas=[0.9, 1.0]"], "optim.betas[1] must be in [0, 1), got 1.0"),
    (EXPERIMENT, ["optim.momentum=1.5"], "optim.momentum must be in [0, 1), got 1.5"),
    (EXPERIMENT, ["optim.grad_clip=0"], "optim.grad_clip must be > 0 or null, got 0.0"),
    (EXPERIMENT, ["optim.grad_accum=0"], "optim.grad_accum must be >= 1, got 0"),
    (EXPERIMENT, ["schedule.warmup_steps=-1"], "schedule.warmup_steps must be >= 0, got -1"),
    (EXPERIMENT, ["schedule.milestones=[0.5, 1.5]"], "schedule.milestones[1] must be in [0, 1], got 1.5"),
    (EXPERIMENT, ["schedule.gamma=0"], "schedule.gamma must be > 0, got 0.0"),
    (EXPERIMENT, ["schedule.min_lr_ratio=2"], "schedule.min_lr_ratio must be in [0, 1], got 2.0"),
    (EXPERIMENT, ["train.epochs=0"], "train.epochs must be >= 1, got 0"),
    (EXPERIMENT, ["train.max_steps=0"], "train.max_steps must be >= 1 or null, got 0"),
    (EXPERIMENT, ["train.seed=-1"], "train.seed must be >= 0, got -1"),
    (EXPERIMENT, ["train.log_every=0"], "train.log_every must be >= 1, got 0"),
    (EXPERIMENT, ["train.val_every=-1"], "train.val_every must be >= 0, got -1"),
    (EXPERIMENT, ["train.keep_last=0"], "train.keep_last must be >= 1, got 0"),
    (EXPERIMENT, ["augment.output_size=[0, 256]"], "augment.output_size[0] must be >= 1, got 0"),
    (EXPERIMENT, ["augment.crop_margin=0"], "augment.crop_margin must be > 0, got 0.0"),
    (EXPERIMENT, ["augment.flip_prob=1.5"], "augment.flip_prob must be in [0, 1], got 1.5"),
    (EXPERIMENT, ["augment.hue=0.6"], "augment.hue must be in [0, 0.5], got 0.6"),
    (EXPERIMENT, ["augment.brightness=-0.1"], "augment.brightness must be >= 0, got -0.1"),
    (EXPERIMENT, ["augment.scale_range=[1.2, 0.8]"], "augment.scale_range must be lo <= hi, got (1.2, 0.8)"),
    (EXPERIMENT, ["augment.blur_limit=[3, 4]"], "augment.blur_limit must be odd kernel sides, got (3, 4)"),
    (EXPERIMENT, ["augment.jpeg_quality_range=[0, 90]"], "augment.jpeg_quality_range[0] must be in [1, 100], got 0"),
    (EXPERIMENT, ["augment.occlusion_size_range=[0.1, 1.5]"], "augment.occlusion_size_range[1] must be in (0, 1], got 1.5"),
    (EXPERIMENT, ["augment.framing=body"], "augment.framing must be one of ['hands', 'image'], got 'body'"),
    (EXPERIMENT, ["model.options.input_size=[0, 64]"], "model.options.input_size[0] must be >= 1, got 0"),
    (EXPERIMENT, ["model.options.hand_size=0"], "model.options.hand_size must be >= 1, got 0"),
    (EXPERIMENT, ["val.dataset=procedural", "val.protocol=dir", "train.best_metric=interwild/mpvpe_all_wrist_mm"],
     "train.best_metric must be a metric of val.protocol 'dir' (e.g. dir/mpvpe_mcp_scaled_mm), got 'interwild/mpvpe_all_wrist_mm'"),
    (EXPERIMENT, ["model.name=dir", "model.options.root_joint=4"], "model.options.root_joint must be 0 (wrist) or 9 (middle MCP), got 4"),
    (EXPERIMENT, ["model.options.loss_weights.verts=-1"], "model.options.loss_weights.verts must be >= 0, got -1.0"),
    (EXPERIMENT, ["model.name=dir_tiny", "model.options.input_size=[64, 32]"],
     "model.options.input_size must be square and a multiple of 32, got (64, 32)"),
    (EXPERIMENT, ["model.options.roi_boxes=box"], "model.options.roi_boxes must be 'pred' or 'gt', got 'box'"),
    (EXPERIMENT, ["model.options.loss=l2"], "model.options.loss must be one of ['l1', 'smooth_l1'], got 'l2'"),
    (EXPERIMENT, ["model.options.hand_size=x"], "expected int for 'model.options.hand_size', got 'x'"),
    (EXPERIMENT, ["model.name=nope"], "model.name must be a registered model (dir, dir_tiny, interwild, interwild_tiny), got 'nope'"),
    (EXPERIMENT, ["model.options.hand_sise=64"],
     "unknown key 'model.options.hand_sise' (valid keys under 'model.options': backbone, body_backbone, body_size, box_channels, "
     "box_deconvs, camera_3d_size, depth_range, hand_size, heatmap_depth, init, input_size, loss, loss_rules, loss_weights, pretrained, roi_boxes, "
     "roi_scale, rot_channels, sigma, trans_backbone, trans_channels, trans_heatmap, trans_pretrained, virtual_focal; "
     "did you mean 'model.options.hand_size'?)"),
    (EXPERIMENT, ["model.name=dir_tiny", "model.options.hand_size=64"],  # an option of another architecture
     "unknown key 'model.options.hand_size' (valid keys under 'model.options': backbone, coord_scale, decoder_channels, dense_colors, "
     "dense_targets, distances, gcn_layers, input_size, joint_dim, joint_embed, loss_weights, pretrained, root_joint, ste_depth, "
     "ste_heads, ste_mlp_ratio; did you mean 'model.options.input_size'?)"),
    (EXPERIMENT, ["model.options=[1]"], "--set model.options=[1]: expected mapping for 'model.options', got [1]"),
    (EXPERIMENT, ["model.hand_size=64"],  # the flat keys of older run configs
     "--set model.hand_size=64: unknown key 'model.hand_size' (valid keys under 'model': name, options)"),
    ("handrecon.sweep:Sweep", ["experiment.model.options.sigma=0"], "experiment.model.options.sigma must be > 0, got 0.0"),
    ("handrecon.sweep:Sweep", ["experiment.data.batch_size=0"], "experiment.data.batch_size must be >= 1, got 0"),
    ("handrecon.sweep:Sweep", ["ratios=[0.0, 1.0]"], "ratios[1] must be in [0, 1), got 1.0"),
    ("handrecon.sweep:Sweep", ["seeds=[0, -1]"], "seeds[1] must be >= 0, got -1"),
    ("handrecon.sweep:Sweep", ["bootstrap=-1"], "bootstrap must be >= 0, got -1"),
    ("handrecon.sweep:Sweep", ["test.dataset=foo"],
     "--set test.dataset=foo: invalid value 'foo' for 'test.dataset' (choices: hic, ih26m, mscoco, procedural, reih)"),
    ("handrecon.data.procedural:ProceduralConfig", ["image_size=[0, 64]"], "image_size[0] must be >= 1, got 0"),
    ("handrecon.data.procedural:ProceduralConfig", ["single_hand_prob=2"], "single_hand_prob must be in [0, 1], got 2.0"),
    ("handrecon.data.procedural:ProceduralConfig", ["interaction_weights=[-1, 1, 1, 1]"],
     "interaction_weights[0] must be >= 0, got -1.0"),
    ("handrecon.data.procedural:ProceduralConfig", ["split_fractions=[0, 0, 0]"],
     "split_fractions must be weights with at least one > 0, got (0.0, 0.0, 0.0)"),
    ("handrecon.data.procedural:ProceduralConfig", ["focal_range=[2, 1]"], "focal_range must be lo <= hi, got (2.0, 1.0)"),
    ("handrecon.data.procedural:ProceduralConfig", ["fill_range=[0, 0.5]"], "fill_range[0] must be > 0, got 0.0"),
    ("handrecon.data.procedural:ProceduralConfig", ["shape_std=-1"], "shape_std must be >= 0, got -1.0"),
    ("handrecon.data.procedural:ProceduralConfig", ["jpeg_quality=0"], "jpeg_quality must be in [1, 100], got 0"),
    ("handrecon.data.procedural:ProceduralConfig", ["batch_size=0"], "batch_size must be >= 1, got 0"),
    ("handrecon.data.procedural:ProceduralConfig", ["roll_range=[1, 0]"], "roll_range must be lo <= hi, got (1.0, 0.0)"),
    (GENERATOR, ["train.log_every=0"], "train.log_every must be >= 1, got 0"),
    (GENERATOR, ["train.val_every=-1"], "train.val_every must be >= 0, got -1"),
    (GENERATOR, ["train.ckpt_every=-1"], "train.ckpt_every must be >= 0, got -1"),
    (GENERATOR, ["data.ratios={real: 0.5}"], "data.ratios must be shares summing to 1 (they sum to 0.5; normalised: {'real': 1.0}), got {'real': 0.5}"),
    (GENERATOR, ["train.max_steps=0"], "train.max_steps must be >= 1 or null, got 0"),
    (GENERATOR, ["train.val_samples=0"], "train.val_samples must be >= 1, got 0"),
    (GENERATOR, ["train.val_inference_steps=0"], "train.val_inference_steps must be >= 1 or null, got 0"),
    (GENERATOR, ["train.keep_last=0"], "train.keep_last must be >= 1, got 0"),
    (GENERATOR, ["data.empty_prompt_prob=1.0"], "data.empty_prompt_prob must be in [0, 1), got 1.0"),
    (GENERATOR, ["model.base_dtype=fp8"], "--set model.base_dtype=fp8: invalid value 'fp8' for 'model.base_dtype' (choices: fp32, bf16, fp16)"),
    (GENERATOR, ["train.seed=-1"], "train.seed must be >= 0, got -1"),
    (GENERATOR, ["generator.guidance_scale=-1"], "generator.guidance_scale must be >= 0, got -1.0"),
    (GENERATOR, ["train.guidance_scale=1"], "--set train.guidance_scale=1: 'train.guidance_scale': a generator setting now: write "
     "generator.guidance_scale (saved with every ControlNet; synth/settings.py)"),
    (GENERATOR, ["generator.fusion_resolution=0"], "generator.fusion_resolution must be >= 1, got 0"),
    (GENERATOR, ["generator.fusion_resolutions=[8, 0]"], "generator.fusion_resolutions[1] must be >= 1, got 0"),
    (GENERATOR, ["generator.hand_bias=.nan"], "generator.hand_bias must be finite, got nan"),
    (GENERATOR, ["generator.condition_style=mesh"], "--set generator.condition_style=mesh: invalid value 'mesh' for 'generator.condition_style' "
     "(choices: parts, hands)"),
    (GENERATOR, ["generator.resolution=4"], "generator.resolution must be >= 8 or null, got 4"),
    (GENERATOR, ["data.batch_size=0"], "data.batch_size must be >= 1, got 0"),
    (GENERATOR, ["generator.crop_margin=0"], "generator.crop_margin must be > 0, got 0.0"),
    (GENERATOR, ["data.num_workers=-1"], "data.num_workers must be >= 0, got -1"),
    (GENERATOR, ["optim.lr=0"], "optim.lr must be > 0, got 0.0"),
    (BASE, ["train.vae_steps=-1"], "train.vae_steps must be >= 0, got -1"),
    (BASE, ["train.scale_samples=0"], "train.scale_samples must be >= 1, got 0"),
    (BASE, ["loss.kl_weight=-1"], "loss.kl_weight must be >= 0, got -1.0"),
    ("synth.ablation:Ablation", ["alphas=[1.0, 0.0]"], "alphas[1] must be non-zero (alpha 0 is the +SE+SF row), got 0.0"),
    ("synth.ablation:Ablation", ["alphas=[.inf]"], "alphas[0] must be finite, got inf"),
    ("synth.ablation:Ablation", ["eval.grid=0"], "eval.grid must be >= 1, got 0"),
    ("synth.ablation:Ablation", ["alphas=[1.0, 2.0, 1.0]"], "alphas[2] must be distinct (each alpha is one row), got 1.0"),
    ("synth.ablation:Ablation", ["alphas=[2]", "only=['+SE', 'SE']"],
     "only[1] must be a row name ('w/o all', '+SE', '+SE+SF', '+SE+SF+AE a=2'), got 'SE'"),
    ("synth.ablation:Ablation", ["only=[]"], "only must be at least one row name, or null for every row, got []"),
    ("synth.ablation:Ablation", ["job.generator.prompt_field=caption"], "job.generator.prompt_field must be null (every row sets it), got 'caption'"),
    ("synth.ablation:Ablation", ["job.generator.hand_bias=1"], "job.generator.hand_bias must be null (every row sets it), got 1.0"),
    ("synth.ablation:Ablation", ["job.controlnet=cn"],
     "job.controlnet must be null (each row trains its own ControlNet; set reuse to generate every row with one), got 'cn'"),
    ("synth.ablation:Ablation", ["train.train.max_steps=null"], "train.train.max_steps must be set (rows are compared at equal steps), got null"),
    ("synth.ablation:Ablation", ["job.base=sd15"],
     "job.base must be train.model.base ('tiny'): a row generates with the base it was trained on, got 'sd15'"),
    ("synth.generation_eval:GenerationEval", ["max_real=0"], "max_real must be >= 1 or null, got 0"),
    ("synth.generation_eval:GenerationEval", ["kid_subsets=0"], "kid_subsets must be >= 1, got 0"),
    ("synth.generation_eval:GenerationEval", ["kid_subset_size=0"], "kid_subset_size must be >= 1, got 0"),
    ("synth.generation_eval:GenerationEval", ["crop_margin=-1"], "crop_margin must be > 0, got -1.0"),
    ("synth.generation_eval:GenerationEval", ["detector.min_confidence=1.5"], "detector.min_confidence must be in [0, 1], got 1.5"),
    (SEMANTICS, ["fewshot=-1"], "fewshot must be >= 0, got -1"),
    (SEMANTICS, ["max_prompt_words=0"], "max_prompt_words must be >= 1, got 0"),
    (SEMANTICS, ["openai.timeout_s=0"], "openai.timeout_s must be > 0, got 0.0"),
    (SEMANTICS, ["openai.retries=-1"], "openai.retries must be >= 0, got -1"),
    (SEMANTICS, ["openai.backoff_s=-1"], "openai.backoff_s must be >= 0, got -1.0"),
    (SEMANTICS, ["openai.concurrency=0"], "openai.concurrency must be >= 1, got 0"),
    (SEMANTICS, ["openai.temperature=-0.5"], "openai.temperature must be >= 0, got -0.5"),
    (SEMANTICS, ["openai.max_tokens=0"], "openai.max_tokens must be >= 1, got 0"),
    (SEMANTICS, ["transformers.batch_size=0"], "transformers.batch_size must be >= 1, got 0"),
    (SEMANTICS, ["transformers.max_new_tokens=0"], "transformers.max_new_tokens must be >= 1, got 0"),
    ("tools/semantics.py:SemanticsRun", ["limit=0"], "limit must be >= 1 or null, got 0"),
    ("tools/semantics.py:SemanticsRun", ["batch=0"], "batch must be >= 1, got 0"),
    ("tools/semantics.py:SemanticsRun", ["semantics.openai.retries=-1"], "semantics.openai.retries must be >= 0, got -1"),
    ("tools/quickstart.py:QuickstartConfig", ["generator_steps=0"], "generator_steps must be >= 1, got 0"),
    ("tools/quickstart.py:QuickstartConfig", ["seed=-1"], "seed must be >= 0, got -1"),
    ("tools/quickstart.py:QuickstartConfig", ["regressor_lr=0"], "regressor_lr must be > 0, got 0.0"),
    ("tools/quickstart.py:QuickstartConfig", ["generator_crop_margin=-1"], "generator_crop_margin must be > 0, got -1.0"),
    ("tools/quickstart.py:QuickstartConfig", ["ratios=[0.0, 1.0]"], "ratios[1] must be in [0, 1), got 1.0"),
    ("tools/quickstart.py:QuickstartConfig", ["procedural.batch_size=0"], "procedural.batch_size must be >= 1, got 0"),
]  # fmt: skip


@pytest.mark.parametrize("spec, overrides, expected", BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_values_are_config_errors_naming_key_and_value(spec, overrides, expected):
    assert error_of(schema(spec), overrides=overrides) == expected


@pytest.mark.parametrize("spec", sorted({spec for spec, _, _ in BAD_VALUES}))
def test_schema_defaults_load(spec):
    cls = schema(spec)
    assert load_config(cls) == cls()


@pytest.mark.parametrize(
    "spec, path",
    [
        (EXPERIMENT, "configs/train_tiny.yaml"),
        (EXPERIMENT, "configs/interwild.yaml"),
        (EXPERIMENT, "configs/interwild_finetune.yaml"),
        (EXPERIMENT, "configs/dir.yaml"),
        (EXPERIMENT, "configs/dir_finetune.yaml"),
        (GENERATOR, "configs/synth_tiny.yaml"),
        (GENERATOR, "configs/synth_sd15.yaml"),
        (BASE, "configs/synth_base_tiny.yaml"),
        ("synth.ablation:Ablation", "configs/ablation_tiny.yaml"),
        ("handrecon.data.procedural:ProceduralConfig", "configs/procedural.yaml"),
    ],
)
def test_shipped_configs_load(spec, path):
    load_config(schema(spec), REPO / path)


def test_best_metric_defaults_to_the_validation_protocols_main_metric():
    cls = schema(EXPERIMENT)
    for protocol, metric in (("interwild", "interwild/mpvpe_all_wrist_mm"), ("dir", "dir/mpvpe_mcp_scaled_mm"), ("dir_wrist", "dir/mpvpe_wrist_scaled_mm")):
        assert load_config(cls, overrides=[f"val.protocol={protocol}"]).train.best_metric == metric
    assert load_config(cls, overrides=["val.protocol=dir", "train.best_metric=dir/mrrpe_mm"]).train.best_metric == "dir/mrrpe_mm"


def test_meaningful_edge_values_are_accepted():
    cfg = load_config(schema(EXPERIMENT), overrides=[
        "val.max_samples=null", "val.images=0", "train.val_every=0", "train.seed=0", "optim.weight_decay=0", "optim.grad_clip=null",
        "optim.betas=[0, 0]", "schedule.min_lr_ratio=1", "data.num_workers=0", SYNTH_SOURCE, "data.ratios={real: 0.75, synth: 0.25}",
        "augment.flip_prob=0", "augment.rotation_prob=1", "model.name=dir", "model.options.root_joint=9",
        "model.options.loss_weights.edge=0",
    ])  # fmt: skip
    assert cfg.data.ratios == {"real": 0.75, "synth": 0.25}
    assert cfg.model.options == {"root_joint": 9, "loss_weights": {"edge": 0.0}}


@dataclass
class _Source:
    kind: str = "a"
    size: int = 1

    def __post_init__(self) -> None:
        check_fields(self, ">= 1", "size")


@dataclass
class _Named:
    sources: dict[str, _Source] = field(default_factory=lambda: {"x": _Source(), "y": _Source(kind="b")})


def test_named_sections_merge_by_entry_and_check_each_entry():
    """dict[str, Section]: a whole mapping replaces the entries, a dotted --set changes or adds one
    (new ones start from the section's defaults), NAME=null drops one, and every entry is checked."""
    Cfg, Source = _Named, _Source
    assert load_config(Cfg).sources == {"x": Source(), "y": Source(kind="b")}
    assert load_config(Cfg, None, ["sources={z: {size: 3}}"]).sources == {"z": Source(size=3)}
    assert load_config(Cfg, None, ["sources.y.size=5", "sources.w.kind=c"]).sources == {"x": Source(), "y": Source("b", 5), "w": Source("c")}
    assert load_config(Cfg, None, ["sources.x=null"]).sources == {"y": Source(kind="b")}
    assert load_config(Cfg, None, ["sources.y={size: 2}"]).sources["y"] == Source(size=2)  # a whole entry replaces it
    assert error_of(Cfg, overrides=["sources.y.size=0"]) == "sources.y.size must be >= 1, got 0"
    assert "did you mean 'sources.y.kind'?" in error_of(Cfg, overrides=["sources.y.kidn=c"])
