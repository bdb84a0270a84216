"""styles.csv is read and written in A1111's format and styles apply by A1111's rules."""

from __future__ import annotations

import pytest

from sdstudio.errors import InvalidRequest, ModelLoadError
from sdstudio.prompts.styles import PromptStyle, StyleDatabase, merge_prompts

A1111_FILE = (
    "\ufeffname,prompt,negative_prompt\n"
    'Cinematic,"{prompt}, cinematic still, film grain","cartoon, drawing"\n'
    'Quality,"masterpiece, best quality",lowres\n'
    '"Multi, line","a\nb",\n'
)


def test_reads_a1111_file(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(A1111_FILE, encoding="utf-8")
    db = StyleDatabase(path)
    assert db.names() == ["Cinematic", "Quality", "Multi, line"]
    assert db.styles["Cinematic"] == PromptStyle(
        "Cinematic", "{prompt}, cinematic still, film grain", "cartoon, drawing"
    )
    assert db.styles["Multi, line"].prompt == "a\nb"


def test_reads_old_name_text_layout(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text("name,text\nOld,old style text\n", encoding="utf-8")
    assert StyleDatabase(path).styles["Old"] == PromptStyle("Old", "old style text", "")


def test_missing_file_is_empty(tmp_path):
    assert StyleDatabase(tmp_path / "nope.csv").names() == []


def test_merge_rules():
    assert merge_prompts("{prompt}, cinematic", "a cat") == "a cat, cinematic"
    assert merge_prompts("masterpiece", "  a cat ") == "a cat, masterpiece"
    assert merge_prompts("masterpiece", "") == "masterpiece"
    assert merge_prompts("", " a cat ") == "a cat"


def test_apply_in_order_to_both_prompts(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(A1111_FILE, encoding="utf-8")
    db = StyleDatabase(path)
    prompt, negative = db.apply_styles("a cat", "blurry", ["Quality", "Cinematic"])
    assert prompt == "a cat, masterpiece, best quality, cinematic still, film grain"
    assert negative == "blurry, lowres, cartoon, drawing"
    # Unknown names are skipped (A1111 applies an empty style, which only trims).
    assert db.apply_styles(" a cat ", "", ["Nope"]) == ("a cat", "")


def test_extract_reverses_apply(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(A1111_FILE, encoding="utf-8")
    db = StyleDatabase(path)
    prompt, negative = db.apply_styles("a cat", "blurry", ["Quality", "Cinematic"])
    assert db.extract_styles(prompt, negative) == (["Quality", "Cinematic"], "a cat", "blurry")
    assert db.extract_styles("a dog", "") == ([], "a dog", "")


def test_save_round_trip_keeps_backup(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(A1111_FILE, encoding="utf-8")
    db = StyleDatabase(path)
    db.set_style(PromptStyle("New", 'with "quotes", commas\nand lines', "neg"))
    db.delete_style("Quality")
    db.save()
    assert (tmp_path / "styles.csv.bak").read_text(encoding="utf-8") == A1111_FILE
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfname,prompt,negative_prompt")
    again = StyleDatabase(path)
    assert again.styles == db.styles and again.names() == ["Cinematic", "Multi, line", "New"]


def test_bad_input_is_a_user_error(tmp_path):
    db = StyleDatabase(tmp_path / "styles.csv")
    with pytest.raises(InvalidRequest, match="name"):
        db.set_style(PromptStyle("  "))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelLoadError, match="bad.csv"):
        StyleDatabase(bad)
