"""Forward hooks that record chosen layers' outputs; one small class owns the handles."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


class ActivationRecorder:
    """Record the outputs of named submodules during a forward pass.

    `with ActivationRecorder(model, ["layer1", "layer4"]) as rec: model(x)` leaves
    `rec.outputs["layer1"]`. Hooks are removed on exit (and `remove()` is safe to call twice).
    `transform` is applied to each output as it is recorded (e.g. pooling), so the full
    feature maps of all layers are never held at once.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.layers = list(layers)
        modules = dict(model.named_modules())
        missing = [name for name in self.layers if name not in modules]
        if missing:
            raise KeyError(f"{type(model).__name__} has no module named {missing}")
        self.transform = transform
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.layers]

    def _hook(self, name: str):
        def record(module, inputs, output):
            self.outputs[name] = self.transform(output) if self.transform else output
        return record

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "ActivationRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class _StopForward(Exception):
    """Raised by the last hook to skip the rest of the network."""


def truncated_forward(model: nn.Module, x: torch.Tensor, layers: list[str],
                      transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Run `model` on `x` and return the recorded outputs of `layers`.

    Stops as soon as the last of `layers` (in execution order) has run, so a classifier head
    that nobody asked for is never computed.
    """
    with ActivationRecorder(model, layers, transform) as rec:
        def stop(module, inputs, output):
            if len(rec.outputs) == len(layers):
                raise _StopForward
        handles = [dict(model.named_modules())[name].register_forward_hook(stop) for name in layers]
        try:
            model(x)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
    return rec.outputs
