"""Sharded data-parallel training (``strategy: fsdp``) on Ray Train with PyTorch's FSDP2.

Each worker keeps only its shard (1/N) of every parameter, gradient, AdamW state and EMA average;
a block's full weights are gathered just for its forward and backward (``fully_shard``: every
element of every ``nn.ModuleList`` of the network, e.g. a UNet or transformer block, is one
unit, and each network the LightningModule holds is the root unit of the rest). The same code
runs on CPU workers over gloo and on GPU workers over NCCL.

Checkpoints are gathered: rank 0 writes one ``last.ckpt`` holding the full weights, optimizer
state (keyed by parameter name) and EMA, which loads with ``torch.load(weights_only=True)``;
on resume each worker takes its shards of it. The final model file is the ordinary one. Lightning's
own ``FSDPStrategy`` (FSDP1) refuses CPU devices, hence this strategy.
"""

from __future__ import annotations

from typing import Any

from ray.train.lightning import RayDDPStrategy

from pipeline.training.sharded_tensors import shard_module


class RayFSDP2Strategy(RayDDPStrategy):
    """Ray's DDP strategy with FSDP2 sharding in place of the DDP wrapper, and gathered
    (full) checkpoints."""

    def configure_ddp(self) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(self.root_device.type, (self.world_size,))
        shard_module(self.lightning_module, mesh)

    def _full_options(self, **extra: Any) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **extra)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The full weights on rank 0 (empty elsewhere); every worker must call this."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        options = self._full_options(cpu_offload=True)
        return get_model_state_dict(self.lightning_module, options=options)

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        """The full optimizer state keyed by parameter name, on rank 0 (empty elsewhere)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        optimizer = getattr(optimizer, "_optimizer", optimizer)  # a LightningOptimizer's own
        options = self._full_options(cpu_offload=True)
        return get_optimizer_state_dict(self.lightning_module, optimizer, options=options)

    def load_optimizer_state_dict(self, checkpoint: Any) -> None:
        """Each worker takes its shards of the full optimizer state in ``checkpoint``."""
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        states = checkpoint["optimizer_states"]
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer = getattr(optimizer, "_optimizer", optimizer)
            set_optimizer_state_dict(
                self.lightning_module, optimizer, state, options=self._full_options()
            )
