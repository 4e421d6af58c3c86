"""One forward pass for a batch whose samples belong to different tasks on one frozen backbone.

Serving N tasks as N models costs N passes of the backbone per batch (Ray Serve's multiplexing
splits a batch by model id). Here the task models that share one frozen backbone are merged into
one module tree that follows the backbone's, with a :class:`TaskRoute` wherever a task's tree
differs from it:

- where a task wraps a frozen module and adds to its output (LoRA's low-rank update around a
  Linear, an adapter around the MLP: their ``SHARED`` child and ``residual``), the frozen module
  runs once for the whole batch and each task adds its residual on its own rows, as HF peft's
  mixed-batch LoRA (``adapter_names``) and Punica's SGMV do;
- where a task replaced a module outright (a head, a tensor it trained itself: BitFit's biases),
  that task's module runs on its own rows only;
- everywhere else the batch runs through the backbone's own modules, once.

Every module of a ViT maps each sample on its own (no batch norm; dropout is off in eval), so
routing rows is exact: each sample's logits are those of its task's model alone (up to the last
bits of a matmul over another batch size). Models that change the token sequence itself (VPT and
DVPT's prompts: their own ``forward_features``) run a pass of their own on their rows for now.

On a Swin the same holds but for one module: a block's window attention sees windows, not
samples, as its rows (and takes the shift mask), so where a task differs inside it (BitFit's
qkv and proj biases) the whole block is routed, on its [B, H, W, C] input. VPT on a Swin puts
prompts inside every window (its own ``encode``) and full fine-tuning shares no frozen tensor:
a pass of their own.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, cast

import torch
from timm.models.swin_transformer import WindowAttention
from torch import nn

from autopetl.methods._prompting import PromptedModel, embed_tokens
from autopetl.methods.base import PetlModel


class _Rows:
    """Which rows of the batch in flight belong to which task: set once per forward, read by
    every route."""

    def __init__(self) -> None:
        self.groups: list[tuple[int, torch.Tensor]] = []


def _signature(module: nn.Module) -> list[tuple[str, object]]:
    """A module tree's structure and the storages behind its tensors."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [(n, type(m)) for n, m in module.named_modules()] + [
        (n, t.untyped_storage().data_ptr()) for n, t in tensors
    ]


def _own_tensors(module: nn.Module) -> list[tuple[str, int]]:
    return [
        (n, t.untyped_storage().data_ptr())
        for n, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    ]


class TaskRoute(nn.Module):
    """One module path where tasks differ. ``kinds[i]``: None (task i uses the shared module as
    it is), "residual" (the shared module, plus task i's ``residual`` on its rows) or "own" (task
    i's own module on its rows)."""

    def __init__(
        self, shared: nn.Module, tasks: Sequence[nn.Module], kinds: list[str | None], rows: _Rows
    ) -> None:
        super().__init__()
        self.shared = shared
        self.tasks = nn.ModuleList(tasks)
        self.kinds = kinds
        self._rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self._rows.groups  # they partition the batch's rows
        if any(self.kinds[t] == "own" for t, _ in groups):
            outs = [(idx, self.tasks[t](x[idx])) for t, idx in groups if self.kinds[t] == "own"]
            shared = [idx for t, idx in groups if self.kinds[t] != "own"]
            if shared:
                rows = torch.cat(shared)
                outs.append((rows, self.shared(x[rows])))
            y = outs[0][1].new_empty((x.shape[0], *outs[0][1].shape[1:]))
            for idx, out in outs:
                y[idx] = out
        else:
            y = self.shared(x)
        for t, idx in groups:
            if self.kinds[t] == "residual":
                wrapper: Any = self.tasks[t]  # a module with SHARED and residual (LoRA, adapter)
                # One scatter-add into the shared output (rows of other tasks untouched).
                y = y.index_add(0, idx, wrapper.residual(x[idx], y[idx]))
        return y


def _merge(base: nn.Module, tasks: list[nn.Module], rows: _Rows) -> nn.Module:
    """The module that computes, for each sample, what its task's module at this path does."""
    reference = _signature(base)
    same = [_signature(t) == reference for t in tasks]
    if all(same):
        return base
    kinds: list[str | None] = []
    for task, untouched in zip(tasks, same, strict=True):
        inner = getattr(task, "SHARED", None)
        if untouched:
            kinds.append(None)
        elif inner and _signature(getattr(task, inner)) == reference:
            kinds.append("residual")
        else:
            kinds.append("own")
    names = list(base._modules)
    recurse = "own" in kinds and all(
        type(t) is type(base)
        and list(t._modules) == names
        and _own_tensors(t) == _own_tensors(base)
        for t in tasks
    )
    if not recurse:  # a leaf, a wrapper, or a module a task replaced: route rows here
        return TaskRoute(base, tasks, kinds, rows)
    # A container all tasks share (a Block, its Attention): merge child by child.
    children: dict[str, nn.Module | None] = {
        name: _merge(child, [cast(nn.Module, t._modules[name]) for t in tasks], rows)
        for name, child in base._modules.items()
        if child is not None
    }
    if any(
        isinstance(base._modules[n], WindowAttention) and c is not base._modules[n]
        for n, c in children.items()
    ):
        # Its rows are a Swin block's windows, not samples: route the whole block instead.
        return TaskRoute(base, tasks, kinds, rows)
    merged = copy.copy(base)  # the same tensors and settings, its own children
    merged._modules = children
    return merged


class MixedTaskModel(nn.Module):
    """Task models that share one frozen backbone, run together: ``forward(x, tasks)`` gives
    each sample its own task's logits, in one pass of the backbone for every task whose model
    keeps the backbone's token sequence.

    Args:
        base: The frozen backbone the task models share (``SharedBackbone.base``).
        models: The task models, index i is task i.
    """

    def __init__(self, base: nn.Module, models: Sequence[PetlModel]) -> None:
        super().__init__()
        self._rows = _Rows()
        self.models = nn.ModuleList(models)  # registered: .to(device) and .eval() reach them
        self._models: list[PetlModel] = list(models)
        # Prompt methods that insert their prompts after the prefix tokens (VPT prepend, DVPT)
        # join the pass, padded to the longest prompts with the padding masked. Other PetlModel
        # subclasses build their own token sequence (VPT add, VPT on a Swin), and a model that
        # trained the embeddings themselves (full) changes every token from the start: a pass of
        # their own. (A Swin's root holds no tensors: there full is the model that shares none.)
        frozen = {p.untyped_storage().data_ptr() for p in base.parameters()}
        self.merged_tasks = [
            i
            for i, m in enumerate(models)
            if (type(m) is PetlModel or (isinstance(m, PromptedModel) and m.prepends_prompts))
            and type(m.backbone) is type(base)
            and _own_tensors(m.backbone) == _own_tensors(base)
            and any(p.untyped_storage().data_ptr() in frozen for p in m.backbone.parameters())
        ]
        self.own_pass = [i for i in range(len(models)) if i not in self.merged_tasks]
        self.trunk = _merge(base, [models[i].backbone for i in self.merged_tasks], self._rows)

    @property
    def passes_per_batch(self) -> int:
        """Backbone passes a batch with every task in it costs."""
        return (1 if self.merged_tasks else 0) + len(self.own_pass)

    def forward(self, x: torch.Tensor, tasks: torch.Tensor) -> list[torch.Tensor]:
        """Logits of each sample ``x[j]`` from task ``tasks[j]``'s model (a list: tasks have
        different numbers of classes)."""
        out: list[torch.Tensor | None] = [None] * x.shape[0]
        merged = [
            (slot, (tasks == i).nonzero().squeeze(1)) for slot, i in enumerate(self.merged_tasks)
        ]
        merged = [(slot, idx) for slot, idx in merged if len(idx)]
        if merged:
            rows = torch.cat([idx for _, idx in merged])
            # Routes index rows of the trunk's batch: the merged tasks' samples, in this order.
            offsets, start = [], 0
            for slot, idx in merged:
                offsets.append((slot, torch.arange(start, start + len(idx), device=x.device)))
                start += len(idx)
            groups = [(self.merged_tasks[slot], local) for slot, local in offsets]
            self._rows.groups = offsets
            try:
                logits = self._merged_pass(x[rows], groups)
            finally:
                self._rows.groups = []
            for (_, idx), task_logits in zip(merged, logits, strict=True):
                for j, row in zip(idx.tolist(), task_logits, strict=True):
                    out[j] = row
        for i in self.own_pass:
            idx = (tasks == i).nonzero().squeeze(1)
            if len(idx):
                for j, row in zip(idx.tolist(), self._models[i](x[idx]), strict=True):
                    out[j] = row
        missing = [j for j, row in enumerate(out) if row is None]
        if missing:
            raise ValueError(f"samples {missing} name no task of this model")
        return out  # type: ignore[return-value]

    def _merged_pass(
        self, x: torch.Tensor, groups: list[tuple[int, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """Each group's logits from one pass of the merged trunk over ``x``."""
        prompted = [(i, rows) for i, rows in groups if isinstance(self._models[i], PromptedModel)]
        if not prompted:
            features = cast(Any, self.trunk).forward_features(x)
            return [self._models[i].forward_head(features[rows]) for i, rows in groups]
        tokens, prompt_out = self._prompted_encode(x, prompted)
        logits = []
        for i, rows in groups:
            model = self._models[i]
            if isinstance(model, PromptedModel) and model.readout != "cls":
                logits.append(model.read_out(tokens[rows], prompt_out[rows, : model.prompt_length]))
            else:
                logits.append(model.forward_head(tokens[rows]))
        return logits

    def _prompted_encode(
        self, x: torch.Tensor, prompted: list[tuple[int, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PromptedModel.encode for a batch of many tasks: every sample's sequence holds room for
        the longest prompts after its prefix tokens; a sample's own prompts fill its first
        positions once they arrive, and every position it does not use is masked out of
        attention, so each sample attends to exactly what its task's model alone would."""
        vit: Any = self.trunk
        embedded = embed_tokens(vit, x)
        n, room = (
            vit.num_prefix_tokens,
            max(cast(PromptedModel, self._models[i]).prompt_length for i, _ in prompted),
        )
        seq = torch.cat(
            [
                embedded[:, :n],
                embedded.new_zeros(len(x), room, embedded.shape[-1]),
                embedded[:, n:],
            ],
            dim=1,
        )
        live = torch.zeros(len(x), room, dtype=torch.bool, device=x.device)
        for i, rows in prompted:  # DVPT reads its frozen model's own image feature first
            cast(PromptedModel, self._models[i]).prepare_prompts(x[rows])
        try:
            for layer, block in enumerate(vit.blocks):
                for i, rows in prompted:
                    model = cast(PromptedModel, self._models[i])
                    if layer == 0:
                        prompts = model.first_prompts(embedded[rows])
                    else:
                        prompts = model.deep_prompts(layer)
                    if prompts is None:
                        continue
                    prompts = prompts.to(seq.dtype)
                    if prompts.dim() == 2:
                        prompts = prompts.expand(len(rows), -1, -1)
                    p = model.prompt_length
                    seq[rows, n : n + p] = model.prompt_dropout(prompts)
                    live[rows, :p] = True
                if bool(live.all()):  # every sample fills all the room: nothing to mask
                    seq = block(seq)
                    continue
                mask = torch.zeros(len(x), 1, 1, seq.shape[1], dtype=seq.dtype, device=x.device)
                mask[:, 0, 0, n : n + room] = torch.where(live, 0.0, float("-inf"))
                seq = block(seq, attn_mask=mask)
        finally:
            for i, _ in prompted:
                cast(PromptedModel, self._models[i]).prepare_prompts(None)
        seq = vit.norm(seq)
        return torch.cat([seq[:, :n], seq[:, n + room :]], dim=1), seq[:, n : n + room]
