"""What an evaluator of an inference pass sees: the pass's context, each batch, and the protocol it follows.

:func:`seg.evaluation.evaluator.run_inference` runs the model once over a loader and hands every batch to
each evaluator of the pass: ``reset(ctx)`` before the first batch, ``process(batch)`` per batch,
``evaluate()`` after the last, returning the part of the :class:`~seg.evaluation.result.EvaluationResult`
it computed. Scores (SegmentationEvaluator), prediction files (official.PredictionWriter, predict's
SegmentationFiles) and panels (visualize.PanelWriter) are such evaluators; a caller composes those it needs.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from seg.data.labels import LabelSpace
from seg.engine.workdir import free_name
from seg.errors import InputError, SegError

from .result import EvaluationResult

__all__ = ["Batch", "PassContext", "Evaluator", "OutputFolderError", "output_folder", "prepare_output_folder"]


class OutputFolderError(SegError, FileExistsError):
    """An output folder of a pass already holds files; the message names it and the way out."""


@dataclass(frozen=True)
class Batch:
    """One step of a pass, on the pass's device. ``images``: as the loader gave them (uint8 RGB (N, 3, H, W),
    or floating images normalised already); ``logits`` (N, K, H, W) and ``preds`` (N, H, W) int64 classes;
    ``targets`` (N, H, W) (None when the loader yields images only); ``position``: the pass position of the
    first image on this rank; ``indices``: the dataset index of each image (None when the loader's order is
    not known, e.g. a shuffling sampler)."""
    images: torch.Tensor
    logits: torch.Tensor
    preds: torch.Tensor
    targets: torch.Tensor | None
    position: int
    indices: Sequence[int] | None

    def __len__(self) -> int:
        return self.preds.shape[0]


@dataclass(frozen=True)
class PassContext:
    """What stays fixed over a pass: ``device``; ``rank`` and ``world_size`` (torch.distributed; each rank
    sees its shard); ``labels`` (class names, palette, ignore value, prediction-file ids); ``mode`` (the
    inference mode); ``image_paths`` (the dataset's files, None when it lists none); ``sample_indices``
    (the dataset index of every image of this rank's pass, in order; None when the order is unknown) and
    ``image_name(position)``: the file (or a description) of the image at a pass position, for messages."""
    device: torch.device
    rank: int
    world_size: int
    labels: LabelSpace
    mode: str
    image_paths: Sequence[str] | None
    sample_indices: Sequence[int] | None
    image_name: Callable[[int], str]

    def ordered_indices(self, what: str) -> Sequence[int]:
        """``sample_indices``, or ValueError naming ``what`` needs them when the loader's order is unknown."""
        if self.sample_indices is None:
            raise InputError(f"{what} needs a loader that does not shuffle")
        return self.sample_indices

    def named_files(self, what: str) -> tuple[Sequence[str], Sequence[int]]:
        """(image paths, sample indices) for an evaluator that names files after the images; ValueError
        naming ``what`` when the dataset lists no image_paths or the order is unknown."""
        if self.image_paths is None:
            raise InputError(f"{what} needs loader.dataset.image_paths to name the output files")
        return self.image_paths, self.ordered_indices(what)


class Evaluator(Protocol):
    """One job of an inference pass (see the module docstring)."""

    def reset(self, ctx: PassContext) -> None:
        """Start a pass: forget any earlier one, check that this one can be done."""

    def process(self, batch: Batch) -> None:
        """Take one batch (avoid host syncs: a pass reads scores back once, at the end)."""

    def evaluate(self) -> EvaluationResult:
        """The part of the result this evaluator computed, the same on every rank where it is a score."""


def output_folder(template: str, mode: str, several: bool) -> str:
    """The folder for ``mode``'s files: ``{mode}`` in ``template`` replaced by it; with ``several`` modes in one
    run and no ``{mode}`` in ``template``, the sub-folder ``template/<mode>``."""
    if "{mode}" in template:
        return template.replace("{mode}", mode)
    return os.path.join(template, mode) if several else template


def prepare_output_folder(folder: str, overwrite: bool = False) -> str | None:
    """Make sure ``folder`` holds no files of an earlier run: OutputFolderError when it holds any, unless
    ``overwrite``, which moves it aside to ``<folder>.old`` (``.old-1``, ... when taken: seg.engine.workdir's
    free_name; nothing is deleted). Returns where the old folder went, or None."""
    if not os.path.isdir(folder) or not os.listdir(folder):
        return None
    if not overwrite:
        raise OutputFolderError(f"{folder}: output folder already holds files; pass --overwrite to move it aside "
                                f"or name another folder")
    stem = folder.rstrip(os.sep)
    aside = free_name(f"{stem}.old")
    os.replace(stem, aside)
    return aside
