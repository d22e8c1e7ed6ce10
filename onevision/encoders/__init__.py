"""Vision encoders behind an open registry keyed by ``(backend, arch)``, each declaring its own metadata.

Every encoder maps ``pixel_values`` ``[N, 3, S, S]`` to patch features ``[N, grid_side**2, width]`` (CLS already
removed) following its family's feature rule:

* ``siglip``: the output of block ``feature_layer`` (reference: the last of so400m's 27 blocks is dropped), with no
  post-layernorm and no pooling head. SigLIP has no CLS token.
* ``clip``: the penultimate block's output (``feature_layer=-2``) without the CLS token.

Blocks after the feature layer are removed at build time, so nothing unused is computed or trained; the encoder's
:meth:`~VisionEncoder.export_config` then describes the truncated tower, which rebuilds offline.

Backends: ``transformers`` (:class:`SiglipEncoder`, :class:`ClipEncoder`), ``timm`` and ``open_clip`` (any
family). Add a backend with one :class:`VisionEncoder` subclass decorated with :func:`register_encoder` (its
contract is on the class), a family with :func:`register_arch`.
"""

from onevision.archs import CLIP, SIGLIP, VisionArch, get_arch, hf_vision_arches, list_archs, register_arch
from onevision.encoders.base import (
    EncoderInfo,
    VisionEncoder,
    build_encoder,
    encoder_class,
    kept_blocks,
    list_encoders,
    register_encoder,
)
from onevision.encoders.open_clip_backend import OpenClipEncoder
from onevision.encoders.timm_backend import TimmEncoder
from onevision.encoders.transformers_backend import ClipEncoder, SiglipEncoder, TransformersEncoder

__all__ = [
    "CLIP",
    "SIGLIP",
    "ClipEncoder",
    "EncoderInfo",
    "OpenClipEncoder",
    "SiglipEncoder",
    "TimmEncoder",
    "TransformersEncoder",
    "VisionArch",
    "VisionEncoder",
    "build_encoder",
    "encoder_class",
    "get_arch",
    "hf_vision_arches",
    "kept_blocks",
    "list_archs",
    "list_encoders",
    "register_arch",
    "register_encoder",
]
