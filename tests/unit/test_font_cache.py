"""The spawner keeps matplotlib's font cache between its starts (sandbox.preimport):
the font lists are copied whole, and nothing else of the directory."""

from __future__ import annotations

import os

from sandbox.preimport import _copy_font_lists


def test_font_lists_are_copied_whole_and_alone(tmp_path):
    source, target = tmp_path / "mpl", tmp_path / "kept" / "matplotlib"
    source.mkdir()
    (source / "fontlist-v330.json").write_text('{"_version": 330}')
    (source / "tex.cache").write_text("not a font list")
    _copy_font_lists(str(source), str(target))
    assert os.listdir(target) == ["fontlist-v330.json"]
    assert (target / "fontlist-v330.json").read_text() == '{"_version": 330}'
    (source / "fontlist-v330.json").write_text('{"_version": 330, "newer": 1}')
    _copy_font_lists(str(source), str(target))  # a later start's list replaces it
    assert (target / "fontlist-v330.json").read_text() == '{"_version": 330, "newer": 1}'


def test_a_missing_source_copies_nothing(tmp_path):
    _copy_font_lists(str(tmp_path / "absent"), str(tmp_path / "kept"))
    assert not (tmp_path / "kept").exists()
