"""What a model actually does, measured in a probe forward: attention calls, parameter layout, activations."""

from .activations import ActivationRecorder, first_tensor, rms
from .attention import AttentionCall, AttentionRecorder, inside
from .forward import ModuleStack, ProbeMode, run_probe
from .layout import LayoutRecorder, Use
from .run import (Inputs, MaterializeError, arbitrary_cpu_copy, as_args, device_of, forward_of, is_meta, materialize_base,
                  small_batch, to_device)

__all__ = ["ActivationRecorder", "AttentionCall", "Inputs", "AttentionRecorder", "LayoutRecorder", "MaterializeError",
           "ModuleStack", "ProbeMode", "Use", "arbitrary_cpu_copy", "as_args", "device_of", "first_tensor",
           "forward_of", "inside", "is_meta", "materialize_base", "rms", "run_probe", "small_batch", "to_device"]
