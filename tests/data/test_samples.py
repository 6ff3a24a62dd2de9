"""The samples shipped in data/ are what data/README.md says they are: unchanged cuts of
the shared data sets, each with its licence text beside it."""

from __future__ import annotations

import pytest

SLICES = {
    # shipped file → (shared file, first N lines)
    "gsm8k_sample.jsonl": ("gsm8k/train.jsonl", 32),
}
SCENES = {
    "roleplay/Sheldon": ["text_0", "text_1", "text_2", "text_3", "text_4", "text_5", "text_6", "text_7", "text_8", "text_9"],
    "roleplay/baizhantang": ["text_0", "text_2", "text_90", "text_125"],
}


def test_every_sample_names_a_licence_that_is_shipped(sample_data):
    readme = (sample_data / "README.md").read_text(encoding="utf-8")
    licences = sorted(p.name for p in (sample_data / "licenses").iterdir())
    assert licences == ["chat_haruhi_suzumiya.LICENSE", "gsm8k.LICENSE", "hh_rlhf.LICENSE"]
    for name in licences:
        assert f"licenses/{name}" in readme
    for name in [*SLICES, *SCENES]:
        assert f"`{name}" in readme, f"data/README.md does not describe {name}"


@pytest.mark.integration
def test_samples_are_unchanged_cuts_of_the_shared_sets(sample_data, shared_data):
    for shipped, (source, lines) in SLICES.items():
        head = (shared_data / source).read_text(encoding="utf-8").splitlines(keepends=True)[:lines]
        assert (sample_data / shipped).read_text(encoding="utf-8") == "".join(head)
    for folder, scenes in SCENES.items():
        assert (sample_data / folder / "system_prompt.txt").read_bytes() == (shared_data / folder / "system_prompt.txt").read_bytes()
        shipped = sorted(p.stem for p in (sample_data / folder / "texts").iterdir())
        assert shipped == sorted(scenes)
        for scene in scenes:
            name = f"texts/{scene}.txt"
            assert (sample_data / folder / name).read_bytes() == (shared_data / folder / name).read_bytes()
    licences = {"gsm8k.LICENSE": "gsm8k/LICENSE", "hh_rlhf.LICENSE": "hh_rlhf/LICENSE",
                "chat_haruhi_suzumiya.LICENSE": "roleplay/LICENSE"}
    for shipped, source in licences.items():
        assert (sample_data / "licenses" / shipped).read_bytes() == (shared_data / source).read_bytes()
