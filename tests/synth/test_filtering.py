"""synth.filtering: the §4.2 event/background rule on constructed rows (incl. edges) and source types."""

from __future__ import annotations

import pytest

from synth.filtering import (
    FilterConfig,
    SourceTypeConfig,
    classify_kind,
    has_ambiance_keyword,
    source_type_of,
    words,
)


def row(duration, tags=(), description="", filename="x.wav", **kw):
    return {
        "duration_s": duration,
        "tags": list(tags),
        "description": description,
        "filename": filename,
        **kw,
    }


@pytest.mark.parametrize(
    "r,kind",
    [
        (row(3.0, ["dog", "bark"], "dog barking"), "event"),
        (row(9.999), "event"),
        (row(10.0), "none"),  # exactly 10 s: not an event (< 10 s) and no keyword
        (row(10.0, ["ambiance"]), "background"),  # exactly 10 s with keyword: background (>= 10 s)
        (row(9.999, ["ambiance"]), "none"),  # short ambience loop
        (row(60.0, ["music", "background"], "theme music"), "none"),  # long, no keyword
        (row(30.0, description="Forest AMBIANCE at night"), "background"),  # case-insensitive
        (row(30.0, filename="forest_ambiances_02.ogg"), "background"),  # file name, plural, underscores
        (row(2.0, description="city ambiance loop"), "none"),
        (row(30.0, description="ambiancesque texture"), "none"),  # not a whole word
        (row(30.0, ["ambience"]), "none"),  # other spelling not matched by default
        (row(0.0), "event"),
    ],
)
def test_paper_rule(r, kind):
    assert classify_kind(r) == kind


def test_tags_as_semicolon_string_and_missing_fields():
    assert classify_kind({"duration_s": 20.0, "tags": "rain;ambiance"}) == "background"
    assert classify_kind({"duration_s": 1.0}) == "event"
    assert classify_kind({"duration_s": 20.0, "tags": None, "description": None}) == "none"


def test_configurable_thresholds_and_keywords():
    cfg = FilterConfig(
        event_max_s=5.0, background_min_s=20.0, ambiance_keywords=("ambiance", "ambience", "room tone")
    )
    assert classify_kind(row(4.9), cfg) == "event"
    assert classify_kind(row(5.0), cfg) == "none"
    assert classify_kind(row(19.9, ["ambience"]), cfg) == "none"
    assert classify_kind(row(20.0, ["ambience"]), cfg) == "background"
    assert classify_kind(row(25.0, description="studio room tones"), cfg) == "background"
    assert classify_kind(row(25.0, description="room with a tone"), cfg) == "none"
    only_tags = FilterConfig(match_fields=("tags",))
    assert classify_kind(row(30.0, description="ambiance"), only_tags) == "none"


def test_background_categories_opt_in():
    music = row(60.0, ["music"], category="music")
    assert classify_kind(music) == "none"
    assert classify_kind(music, FilterConfig(background_categories=("music",))) == "background"
    assert has_ambiance_keyword(row(1.0, category="Music"), FilterConfig(background_categories=("music",)))


@pytest.mark.parametrize("bad", [None, "abc", float("nan"), -1.0])
def test_bad_duration_is_clear_error(bad):
    with pytest.raises(ValueError, match="duration_s"):
        classify_kind({"id": "a/b", "duration_s": bad})
    with pytest.raises(ValueError, match="duration_s"):
        classify_kind({"id": "a/b"})


def test_filter_config_validation():
    with pytest.raises(ValueError):
        FilterConfig(ambiance_keywords="ambiance")
    with pytest.raises(ValueError):
        FilterConfig(ambiance_keywords=("--",))
    with pytest.raises(ValueError):
        FilterConfig(event_max_s=0)


def test_words():
    assert words("Forest_Ambiance-02.ogg") == ["forest", "ambiance", "02", "ogg"]


def test_source_type_mapping():
    assert source_type_of({"category": "sfx"}) == "sfx"
    assert source_type_of({"category": "ui"}) == "sfx"
    assert source_type_of({"category": "speech"}) == "general"
    assert source_type_of({}) == "general"
    cfg = SourceTypeConfig(by_source={"freesound": "general", "bbc-sfx": "sfx"}, by_category={"sfx": "sfx"})
    assert source_type_of({"source": "freesound", "category": "sfx"}, cfg) == "general"  # source wins
    assert source_type_of({"source": "bbc-sfx", "category": "speech"}, cfg) == "sfx"
    assert source_type_of({"source": "other", "category": "ui"}, cfg) == "general"
    with pytest.raises(ValueError, match="allowed"):
        SourceTypeConfig(by_source={"x": "music"})
    with pytest.raises(ValueError):
        SourceTypeConfig(default="sfx-ish")
