"""Adjustments become a task graph; every bad adjustment is refused before anything runs."""

from __future__ import annotations

import pytest

from tilemore.errors import (
    AdjustmentError,
    InvalidParameter,
    UnknownAlgorithm,
    UnknownParameter,
    UnknownStage,
    UnsupportedOutputFormat,
)
from tilemore.pipeline import build_graph
from tilemore.pipeline.graph import FromTask, Picked, Source


def test_default_graph_fans_out_then_picks(denoised):
    g = build_graph(denoised, {}, "jpeg")
    ids = [t.id for t in g.tasks]
    branches = ["master/nlmeans", "master/bilateral", "master/guided", "master/dncnn",
                "master/deblock", "master/impulse", "master/keep"]
    assert ids == ["decode", *branches, "master/select", "shifter", "encoder"]
    assert g.task("decode").inputs == (Source(),)
    assert g.task("master/guided").inputs == (FromTask("decode"),)
    assert g.task("master/dncnn").inputs == (FromTask("decode"),)
    assert g.task("shifter").inputs == (Picked("master/select", tuple(branches)),)
    assert g.candidates("master/select") == branches
    assert g.algorithms == {"master": "denoised-multiformat"}
    assert g.output == "encoder"


def test_shared_and_per_branch_parameters(denoised):
    g = build_graph(denoised, {"master": {
        "algorithm": "denoised-multiformat", "strength": 0.5,
        "branches": {"nlmeans": {"search_window": 15}, "guided": {"strength": 2.0}},
    }})
    assert g.task("master/nlmeans").params.strength == 0.5
    assert g.task("master/nlmeans").params.search_window == 15
    assert g.task("master/bilateral").params.strength == 0.5
    assert g.task("master/guided").params.strength == 2.0


def test_single_operator_choice(denoised):
    g = build_graph(denoised, {"master": {"algorithm": "bilateral", "diameter": 5}})
    assert [t.id for t in g.tasks] == ["decode", "master", "shifter", "encoder"]
    assert g.task("master").params.diameter == 5


def test_output_format_reaches_the_encoder(denoised):
    assert build_graph(denoised, {}, "webp").task("encoder").params.format == "webp"
    with pytest.raises(UnsupportedOutputFormat, match="'gif'"):
        build_graph(denoised, {}, "gif")
    with pytest.raises(AdjustmentError, match="contradicts"):
        build_graph(denoised, {"encoder": {"format": "png"}}, "jpeg")


@pytest.mark.parametrize("adjustments, error, words", [
    ({"mastr": {}}, UnknownStage, "adjustments.mastr"),
    ({"master": {"algorithm": "magic"}}, UnknownAlgorithm, "unknown algorithm 'magic'"),
    ({"master": {"algorithm": 3}}, UnknownAlgorithm, "unknown algorithm '3'"),
    ({"master": {"strenght": 1}}, UnknownParameter, "adjustments.master.strenght"),
    ({"master": {"branches": {"wavelet": {}}}}, UnknownParameter, "no branch 'wavelet'"),
    ({"master": {"strength": "strong"}}, InvalidParameter, "strength"),
    ({"master": {"strength": -1}}, InvalidParameter, "strength"),
    ({"encoder": {"quality": 101}}, InvalidParameter, "adjustments.encoder.quality"),
    ({"encoder": {"quality": "85"}}, None, None),  # lax numeric strings are fine
    ({"shifter": {"resize": {"width": 0}}}, InvalidParameter, "resize.width"),
    ({"shifter": {"resize": {"width": -20}}}, InvalidParameter, "resize.width"),
    ({"shifter": {"resize": {"mode": "fit"}}}, InvalidParameter, "width, height or both"),
    ({"shifter": {"resize": {"width": 10, "mode": "stretch"}}}, InvalidParameter, "mode"),
    ({"shifter": {"crop": {"x": 0, "y": 0, "width": 10}}}, InvalidParameter, "both width"),
    ({"shifter": {"crop": {"aspect": "16:0"}}}, InvalidParameter, "aspect"),
    ({"shifter": {"crop": {"x": -1, "width": 5, "height": 5}}}, InvalidParameter, "crop.x"),
    ({"shifter": {"rotate": 90}}, UnknownParameter, "adjustments.shifter.rotate"),
    ({"shifter": "small"}, AdjustmentError, "must be an object"),
])
def test_bad_adjustments(denoised, adjustments, error, words):
    if error is None:
        build_graph(denoised, adjustments, "jpeg")
        return
    with pytest.raises(error) as info:
        build_graph(denoised, adjustments, "jpeg")
    assert words in info.value.message
    assert info.value.status == 422


def test_size_hint_only_when_the_consumer_allows(catalog, denoised):
    thumb = catalog.pipeline("thumbnail")
    g = build_graph(thumb, {"shifter": {"resize": {"width": 1600}}})
    assert g.task("decode").params.size_hint == (1600, 1)
    g = build_graph(thumb, {"shifter": {"resize": {"width": 100}, "crop": {"aspect": "1:1"}}})
    assert g.task("decode").params.size_hint is None  # a crop needs every source pixel
    g = build_graph(denoised, {"shifter": {"resize": {"width": 100}}})
    assert g.task("decode").params.size_hint is None  # denoisers need every pixel


def test_critical_path_takes_the_longest_branch(denoised):
    g = build_graph(denoised, {})
    cost = {t.id: 1.0 for t in g.tasks} | {"master/nlmeans": 10.0}
    assert g.critical_path(cost) == 1 + 10 + 1 + 1 + 1
