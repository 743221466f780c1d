"""The result of an evaluation pass: one typed object, serialised to JSON in one place.

Each evaluator of a pass (seg.evaluation.evaluators) returns the part it computed as an
:class:`EvaluationResult`; :meth:`EvaluationResult.merge` joins the parts. ``metrics`` holds what the results
JSON holds; the per-image statistics and the written prediction files travel beside it (the statistics go
to a ``.npz`` sidecar, seg.evaluation.stats; the files are scored by seg.evaluation.official).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from seg.atomic import atomic_write_json
from seg.errors import InputError

__all__ = ["EvaluationResult", "json_safe", "write_json"]


def json_safe(obj: Any) -> Any:
    """NaN / inf -> None recursively (strict JSON), tuples -> lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(data: Mapping, path: str) -> None:
    """``data`` as strict JSON (see :func:`json_safe`), written atomically: a crash or error leaves the
    previous file at ``path`` as it was."""
    atomic_write_json(json_safe(dict(data)), path, indent=1, allow_nan=False)


@dataclass
class EvaluationResult(Mapping):
    """Scores and facts of one pass (``metrics``: the results JSON's entries, read as ``result[key]``),
    ``predictions``: (prediction PNG, ground-truth PNG) pairs written by a PredictionWriter (None when none
    ran), ``image_stats``: per-image counts of a SegmentationEvaluator (None unless asked for)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    predictions: list[tuple[str, str]] | None = None
    image_stats: dict[str, Any] | None = None

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    def update(self, *entries: Mapping[str, Any], **more: Any) -> None:
        """Add facts about the run (model, config, split...) to the JSON entries, as dict.update does."""
        for mapping in entries:
            self.metrics.update(mapping)
        self.metrics.update(more)

    @classmethod
    def merge(cls, parts: Iterable[EvaluationResult]) -> EvaluationResult:
        """One result from the parts of several evaluators; two parts giving the same entry is a programmer
        error (ValueError naming it)."""
        out = cls()
        for part in parts:
            clash = set(out.metrics) & set(part.metrics)
            if clash:
                raise InputError(f"two evaluators of one pass both return {sorted(clash)}")
            out.metrics.update(part.metrics)
            for name in ("predictions", "image_stats"):
                value = getattr(part, name)
                if value is not None:
                    if getattr(out, name) is not None:
                        raise InputError(f"two evaluators of one pass both return {name}")
                    setattr(out, name, value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The results JSON's content: ``metrics`` with NaN / inf as None (strict JSON)."""
        return json_safe(self.metrics)

    def to_json(self, path: str) -> None:
        """Write :meth:`to_dict` to ``path`` atomically."""
        write_json(self.metrics, path)
