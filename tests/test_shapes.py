"""Base shapes from modules, mappings, hptransfer JSON and mup .bsh files; name matching across depths."""

from __future__ import annotations

import pytest

import hptransfer as hpt
from hptransfer.models import PlainGPT, PlainMLP
from hptransfer.structure.shapes import glob_to_regex, index_pattern, load_base, match_base_name

from conftest import meta


def factors(plan):
    return {n: (r.role, r.fan_in_mult, r.fan_out_mult, r.lr["adam"]) for n, r in plan.params.items()}


def test_every_base_form_gives_the_same_plan(tmp_path):
    base = meta(PlainGPT, 32, 2)
    as_dict = {n: tuple(p.shape) for n, p in base.named_parameters()}
    path = hpt.save_shapes(base, tmp_path / "base.json")
    plans = [hpt.parametrize(PlainGPT(64, 2), b, "mup", init="keep") for b in (base, as_dict, str(path))]
    assert factors(plans[0]) == factors(plans[1]) == factors(plans[2])


def test_mup_bsh_file_loads(tmp_path):
    mup = pytest.importorskip("mup")
    bsh = tmp_path / "base.bsh"
    mup.make_base_shapes(meta(PlainMLP, 64), meta(PlainMLP, 128), savefile=str(bsh))
    ours = hpt.parametrize(PlainMLP(256), str(bsh), "mup", init="keep")
    reference = hpt.parametrize(PlainMLP(256), meta(PlainMLP, 64), "mup", init="keep")
    assert factors(ours) == factors(reference)
    # at the base width the .bsh still marks width dims, so the readout is found
    at_base = hpt.parametrize(PlainMLP(64), str(bsh), "mup", multipliers={"output": 3.0}, init="keep")
    assert at_base.record("4.weight").role == "output"


@pytest.mark.parametrize("content,suffix", [
    ("{not json", ".json"),
    ('{"format": "something-else", "shapes": {}}', ".json"),
    ("fc.weight: [64, nul", ".bsh"),
    ("- just\n- a list", ".bsh"),
])
def test_bad_shapes_file(tmp_path, content, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    model = PlainMLP(128)
    with pytest.raises(hpt.ShapesFileError, match="could not parse"):
        hpt.parametrize(model, str(path))
    assert hpt.get_plan(model) is None


def test_missing_shapes_file(tmp_path):
    with pytest.raises(hpt.ShapesFileError, match="does not exist"):
        load_base(tmp_path / "nope.json")


def test_shallow_base_matches_by_block_index_innermost_first():
    shapes = load_base(meta(PlainGPT, 32, 2))
    assert index_pattern("blocks.7.mlp.2.weight") == "blocks.#.mlp.#.weight"
    assert match_base_name("blocks.7.mlp.2.weight", shapes) in ("blocks.0.mlp.2.weight", "blocks.1.mlp.2.weight")
    assert match_base_name("blocks.7.mlp.0.weight", shapes).endswith("mlp.0.weight")
    assert match_base_name("head.weight", shapes) is None


def test_globs_respect_dots():
    assert glob_to_regex("blocks.*.attn").match("blocks.3.attn")
    assert not glob_to_regex("blocks.*.attn").match("blocks.3.inner.attn")
    assert glob_to_regex("blocks.**.attn").match("blocks.3.inner.attn")


def test_delta_marks_width_dims(tmp_path):
    path = hpt.save_shapes(meta(PlainMLP, 64), tmp_path / "s.json", delta=meta(PlainMLP, 128))
    loaded = load_base(path)
    assert loaded.width["2.weight"] == (True, True) and loaded.width["0.weight"] == (True, False)
