"""Methods: small objects that say which heads the network needs and how a batch becomes a
loss. The training loop is one, shared by every method; a new method is a registry entry.

    method = build_method(config)          # by config.method.name
    out = method(batch, epoch)             # LossOutput(total, parts)
    logits = method.predict_logits(image)  # [B, N+1, *S], what inference uses
"""

from tctseg.methods.base import LossOutput, Method
from tctseg.methods.registry import available_methods, build_method, method_class, register_method
from tctseg.methods.tal import TALMethod
from tctseg.methods.tct import TCTMethod
from tctseg.methods.me import MEMethod
from tctseg.methods.aal import AALMethod
from tctseg.methods.dodnet import DoDNetMethod
from tctseg.methods.clip_driven import CLIPDrivenMethod
from tctseg.methods.hermes import HermesMethod
from tctseg.methods.pfl import PFLMethod

__all__ = [
    "AALMethod",
    "CLIPDrivenMethod",
    "DoDNetMethod",
    "HermesMethod",
    "MEMethod",
    "PFLMethod",
    "LossOutput",
    "Method",
    "TALMethod",
    "TCTMethod",
    "available_methods",
    "build_method",
    "method_class",
    "register_method",
]
