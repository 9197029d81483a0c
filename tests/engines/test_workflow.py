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
"""Workflow helpers that bundle configs call (``monai_transfer.engines.workflow``)."""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from monai_transfer.engines.workflow import detach_handler


def test_detach_handler_removes_only_an_attached_handler():
    engine = Engine(lambda e, b: None)
    calls = []

    def handler(e):
        calls.append(e.state.epoch)

    assert detach_handler(engine, handler) is False  # never attached: left alone, no error
    engine.add_event_handler(Events.EPOCH_COMPLETED, handler)
    engine.run([0], max_epochs=1)
    assert calls == [1]
    assert detach_handler(engine, handler, Events.ITERATION_COMPLETED) is False  # other event: kept
    assert detach_handler(engine, handler) is True
    assert not engine.has_event_handler(handler, Events.EPOCH_COMPLETED)
    engine.run([0], max_epochs=2)
    assert calls == [1]


def test_detach_handler_as_a_config_component():
    """A ``run`` step written as a ``_target_`` component calls the helper with its keys as arguments."""
    engine = Engine(lambda e, b: None)

    def handler(e):
        pass

    engine.add_event_handler(Events.EPOCH_COMPLETED, handler)
    parser = ConfigParser(
        {"engine": "$None", "run": [{"_target_": "monai_transfer.engines.workflow.detach_handler",
                                     "engine": "@engine", "handler": "@handler"}]}
    )  # fmt: skip
    parser["engine"], parser["handler"] = engine, handler
    assert parser.get_parsed_content("run#0") is True
    assert not engine.has_event_handler(handler, Events.EPOCH_COMPLETED)
