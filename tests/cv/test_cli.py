# Copyright (c) monai-transfer contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""``python -m monai_transfer.cv``: options, bundle overrides, the default run folder, old spellings, help."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.utils import REPO_ROOT

TRAIN = REPO_ROOT / "bundles" / "xray" / "configs" / "train.json"


def _fake_run(monkeypatch):
    import monai_transfer.cv.cli as cli

    calls = []

    def fake(config, **kwargs):
        calls.append((config, kwargs))
        return {"chosen": {"epochs": 1}, "files": {}}

    monkeypatch.setattr(cli, "run_cross_validation", fake)
    return cli, calls


def test_cli_parses_options_and_overrides(monkeypatch, capsys, tmp_path):
    cli, calls = _fake_run(monkeypatch)
    cli.main(
        ["--bundle", str(TRAIN.parents[1]), "--folds", "3", "--no_calibrate", "--epochs", "4", "--device", "cpu",
         "--max_items", "null", "--class_names", '["a", "b"]', "--output_dir", str(tmp_path / "cv"),
         "--threshold", "0.3"]
    )  # fmt: skip
    config, kwargs = calls[0]
    assert Path(config) == TRAIN and kwargs["folds"] == 3 and kwargs["calibrate"] is False
    assert kwargs["final_fit"] is True and kwargs["threshold_method"] == "youden"
    assert kwargs["epochs"] == 4 and kwargs["device"] == "cpu" and kwargs["max_items"] is None
    assert kwargs["class_names"] == ["a", "b"] and kwargs["output_dir"] == str(tmp_path / "cv")
    assert kwargs["threshold"] == 0.3  # a bundle id, not an abbreviation of --threshold_method
    assert '"epochs": 1' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--bundle", str(TRAIN.parents[1]), "--epochs"])  # an override without a value
    with pytest.raises(SystemExit):
        cli.main(["--bundle", str(TRAIN.parents[1]), "stray"])  # not an --<id> VALUE pair


def test_default_run_folder_is_new_and_never_the_bundle(monkeypatch):
    """Without ``--output_dir`` the run goes to a new ``<bundle>/runs/cv-<timestamp>`` folder: the template's
    ``models/`` (command 1's model) are never overwritten (issue 30)."""
    cli, calls = _fake_run(monkeypatch)
    cli.main(["--bundle", str(TRAIN.parents[1]), "--folds", "2"])
    out = Path(calls[0][1]["output_dir"])
    assert out.parent == TRAIN.parents[1] / "runs" and out.name.startswith("cv-")
    assert out.resolve() != TRAIN.parents[1].resolve()


def test_old_spellings_still_work_with_a_deprecation_warning(monkeypatch):
    cli, calls = _fake_run(monkeypatch)
    with pytest.warns(DeprecationWarning) as record:
        cli.main(["--bundle", str(TRAIN.parents[1]), "--no-calibrate", "--no-final-fit", "--output_dir", "/tmp/x"])
    messages = [str(w.message) for w in record]
    assert any("--no-calibrate is deprecated" in m and "use --no_calibrate" in m for m in messages), messages
    assert any("--no-final-fit is deprecated" in m and "use --no_final_fit" in m for m in messages), messages
    assert calls[0][1]["calibrate"] is False and calls[0][1]["final_fit"] is False


def test_help_documents_every_flag_and_the_overrides(capsys):
    from monai_transfer.cv.cli import build_arg_parser

    parser = build_arg_parser()
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
        assert all(o in text for o in action.option_strings)
    flat = " ".join(text.split())
    assert "--<id> VALUE" in flat and "train.json" in flat and "<bundle>/runs/cv-" in flat
    with pytest.raises(SystemExit) as e:
        from monai_transfer.cv import main

        main(["--help"])
    assert e.value.code == 0 and "--<id> VALUE" in capsys.readouterr().out
