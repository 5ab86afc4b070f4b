"""synth.captions: fallback captions from tags/description/file name."""

from __future__ import annotations

import csv

import pytest

from synth.captions import UNKNOWN_CAPTION, clean_caption, fallback_captions, filename_caption, tag_caption


def test_description_first_and_cleaned():
    caps = fallback_captions("speech;voice;word;person", 'A person says "Goodbye"', "goodbye.ogg")
    assert caps[0] == "a person says goodbye"
    assert caps[1] == "speech voice word person"


def test_markup_quotes_and_punctuation_removed():
    assert clean_caption('<b>Dog</b> "barking" *loudly*!!  [x] (y) `z`') == "dog barking loudly x y z"
    assert clean_caption("“Fancy” ‘quotes’ & ampersand&amp;stuff") == "fancy quotes ampersand stuff"
    assert clean_caption("double-barrel shotgun, dog's bark.") == "double-barrel shotgun, dog's bark"
    assert clean_caption(" , ,  ") == ""


def test_word_limits():
    long = " ".join(f"w{i}" for i in range(30))
    (cap, *_) = fallback_captions([], long, "")
    assert len(cap.split()) == 13
    assert fallback_captions(["dog"], "", "") == ["dog sound"]  # one word is padded to two
    assert fallback_captions(None, "Thunder", None)[0] == "thunder sound"


def test_never_empty():
    assert fallback_captions(None, None, None) == [UNKNOWN_CAPTION]
    assert fallback_captions([], "  ", "") == [UNKNOWN_CAPTION]
    assert fallback_captions("", '"" <br/>', "123.wav") == [UNKNOWN_CAPTION]
    assert fallback_captions(None, None, "DSPLPAIN.wav") == ["dsplpain sound"]


def test_tags_generic_and_inflections_dropped():
    assert tag_caption("fire;burning;burn;sfx;loop") == "fire burning"
    assert tag_caption(["door", "closing", "close", "doors"]) == "door closing"
    assert tag_caption("a;b;c;d;e;f;g;h") == "a b c d e f"
    # tags as a JSON-list string (synth.tags.parse_tags) are separate tags, like a list
    assert tag_caption('["door", "closing", "close", "doors"]') == "door closing"
    assert tag_caption(float("nan")) == "" and tag_caption(None) == ""


def test_filename_words():
    assert filename_caption("Item_Drop_Sound_0.ogg") == "item drop sound"
    assert filename_caption("audio/x/OxygenSysWarning-02.oga") == "oxygen sys warning"
    assert filename_caption("raving_crowd01.ogg") == "raving crowd"
    # cryptic one-word names are used only when nothing else is there
    assert "dsplpain sound" not in fallback_captions("voice;pain", "man grunting in pain", "DSPLPAIN.wav")


def test_deterministic_distinct_and_n():
    args = ("ambiance;background;forest;night", "Dark forest night ambiance", "dark_forest__night.ogg")
    assert fallback_captions(*args) == fallback_captions(*args)
    caps = fallback_captions(*args, n=3)
    assert len(caps) == len(set(caps)) == 3
    assert fallback_captions(*args, n=1) == ["dark forest night ambiance"]
    with pytest.raises(ValueError):
        fallback_captions(*args, n=0)


def test_whole_demo_corpus(demo_corpus):
    with open(demo_corpus / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        caps = fallback_captions(r["tags"], r["description"], r["filename"])
        assert caps and all(2 <= len(c.split()) <= 13 for c in caps), (r["id"], caps)
        assert all(c == c.lower() and '"' not in c for c in caps)
