"""`train.data`: which inputs hold the data and how its records are read."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from cloudtune.spec.base import TrainPart

DATA_FORMATS = ("auto", "text", "instruction", "chat")
IMAGE_DATA_OPTIONS = ("instance_prompt", "caption_dropout", "random_flip", "center_crop", "bucketing")
TASK_DATA_OPTIONS: dict[str, tuple[str, ...]] = {
    "causal-lm": ("format", "text_field", "prompt_field", "completion_field", "messages_field", "chat_template",
                  "packing", "streaming"),
    "seq-classification": ("text_field", "label_field", "labels"),
    "text-to-image": ("text_field", *IMAGE_DATA_OPTIONS),
    "text-to-audio": ("text_field",),
    "preference": (),
}
"""The `train.data` options each task's recipe reads, beyond `train` and `eval` (which every task reads): the
preference recipe reads TRL's own field names (cloudtune.data.preference), so none of the field-name options."""
TASK_DATA_READS = {
    "causal-lm": "train.data.text_field, prompt_field + completion_field or messages_field (by format)",
    "seq-classification": "train.data.text_field and label_field",
    "text-to-image": "images with captions (train.data.text_field) or one instance_prompt",
    "text-to-audio": "a folder of audio files with descriptions (train.data.text_field)",
    "preference": "TRL's preference fields by their own names (prompt, chosen, rejected; or prompt, completion, label)",
}
"""What each task reads instead, as the refusal of an option it does not read says it."""


class DataSpec(TrainPart):
    _OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = (
        "format", "prompt_field", "completion_field", "messages_field", "chat_template", "label_field", "labels", "packing",
        "streaming", "instance_prompt", "caption_dropout", "random_flip", "center_crop", "bucketing",
    )
    train: str = Field("train", description="name of the input holding the training data, or a Hub dataset "
                       "hf:ORG/NAME[:SPLIT] (causal-lm; read in the job, which then needs network)")
    eval: str | None = Field(
        "eval", description="name of the input holding evaluation data; null = none; left out = 'eval' if that input exists"
    )
    format: Literal["auto", "text", "instruction", "chat"] = Field(
        "auto",
        description="causal-lm record shape: text (text_field), instruction (prompt_field + completion_field), "
        "chat (messages_field); auto = detected from the first record",
    )
    text_field: str = Field("text", description="record field holding the text (text format; seq-classification input)")
    prompt_field: str = Field("prompt", description="instruction format: field holding the prompt (no loss on it)")
    completion_field: str = Field("completion", description="instruction format: field holding the completion (the loss)")
    messages_field: str = Field("messages", description="chat format: field holding the list of {role, content} messages")
    chat_template: str | None = Field(
        None, description="chat format: Jinja chat template used when the tokenizer has none (or to replace its own)"
    )
    label_field: str = Field("label", description="seq-classification: field holding the label (a name or an integer id)")
    labels: list[str] | None = Field(
        None, description="seq-classification: the label names in id order; null = the sorted names found in the data"
    )
    packing: bool = Field(False, description="causal-lm: pack several examples per row of at most max_seq_len tokens "
                          "(best-fit decreasing; greedy in order when streaming); position ids restart per example, "
                          "so no token attends across examples")
    streaming: bool = Field(False, description="causal-lm: read the training data as a stream (🤗 Datasets "
                            "IterableDataset: nothing converted or cached on disk), for data larger than the disk; "
                            "needs hyperparameters.max_steps; examples are read and packed in file order")
    instance_prompt: str | None = Field(
        None, description="text-to-image: one prompt for every image of a subject folder (DreamBooth-style, no prior "
        "preservation); null = captions from metadata.jsonl / metadata.csv (text_field) or same-name .txt files")
    caption_dropout: float = Field(0.0, ge=0, lt=1, description="text-to-image: share of captions replaced by the "
                                   "empty prompt in training (what classifier-free guidance needs)")
    random_flip: bool = Field(False, description="text-to-image: flip each training image horizontally with "
                              "probability 0.5 (both variants' latents are cached when the cache is on)")
    center_crop: bool = Field(True, description="text-to-image: crop the resized image at its centre (false: at a "
                              "random offset, which turns the latent cache off)")
    bucketing: bool = Field(True, description="text-to-image: aspect-ratio buckets of about resolution^2 pixels (sides "
                            "multiples of 64; of 8 below resolution 256), so portrait and landscape images are not "
                            "cropped to squares; false = "
                            "every image resized and cropped to resolution x resolution")

    @field_validator("text_field", "prompt_field", "completion_field", "messages_field")
    @classmethod
    def _field_name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty; name the record field (the column) that holds it, or remove the option for "
                             "its default")
        return v

    @field_validator("instance_prompt")
    @classmethod
    def _instance_prompt(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("is empty, which would train every image on the empty prompt and ignore its captions; "
                             "write the subject's prompt (e.g. 'a photo of sks dog'), or remove it to read the captions")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if len(v) < 2:
                raise ValueError("labels needs at least two label names (or null to take them from the data)")
            dupes = sorted({x for x in v if v.count(x) > 1})
            if dupes:
                raise ValueError(f"labels lists {', '.join(map(repr, dupes))} more than once; each label name once")
        return v


def unread_data_option(task: str, data: DataSpec) -> str | None:
    """The refusal (one sentence, then `To fix:`) of the first `train.data` option that holds a value other than its
    default and that `task` does not read (`TASK_DATA_OPTIONS`), or None. A default value is never refused: it
    changes nothing, and the job's config (a dump of the spec, re-validated in the container) carries some defaults."""
    read = TASK_DATA_OPTIONS.get(task)
    if read is None:
        return None
    for name, field in DataSpec.model_fields.items():
        if name in ("train", "eval") or name in read:
            continue
        if getattr(data, name) != field.get_default(call_default_factory=True):
            fix = ("rename the record fields to those names and remove it" if task == "preference" and
                   name.endswith("_field") else "remove it")
            return (f"train.data.{name} does not apply to task {task}, which reads {TASK_DATA_READS[task]}, so it "
                    f"would be ignored\nTo fix: {fix}")
    return None
