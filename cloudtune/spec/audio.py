"""`train.audio`: how the text-to-audio recipe cuts its clips and drops descriptions for classifier-free guidance
(its samples are `train.validation`, shared with text-to-image: cloudtune.spec.image)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from cloudtune.spec.base import TrainPart


class AudioSpec(TrainPart):
    """text-to-audio: clip lengths and classifier-free-guidance dropout."""

    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("max_seconds", "min_seconds", "description_dropout")
    max_seconds: float = Field(
        30.0, gt=0, le=600, description="clips longer than this are split into consecutive pieces of this length "
        "(MusicGen was trained on 30 s); a last piece shorter than min_seconds is dropped")
    min_seconds: float = Field(
        1.0, gt=0, le=600, description="clips shorter than this are refused by the preflight (the file and the fix)")
    description_dropout: float = Field(
        0.1, ge=0, lt=1, description="share of training examples whose description is replaced by the null condition "
        "(zero text states, as MusicGen's generate uses for classifier-free guidance), so guidance keeps working")
