"""A checkpoint's own processor, also on machines without torchvision.

In transformers 5.23 every video processor requires torchvision, so ``AutoProcessor`` cannot build
the processors that carry one (Qwen2/2.5/3-VL, LLaVA-OneVision, InternVL, SmolVLM), nor Mistral 3's
``PixtralProcessor``, whose module imports torchvision. The toolkit feeds images and text only, so
where torchvision is missing :func:`load_processor` builds the family's processor without its video
processor, from the folder's own files (tokenizer, image processor, ``processor_config.json``, chat
template): the same placeholder expansion, tiling and extra inputs (``image_grid_thw``, ...) as the
full processor. With torchvision installed it is the plain ``AutoProcessor`` call.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import transformers
from transformers import AutoConfig, AutoProcessor, ProcessorMixin
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
from transformers.utils import is_torchvision_available

# where a folder names its processor class, in the order AutoProcessor looks
PROCESSOR_CLASS_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
VIDEO_PROCESSOR_FILE = "video_preprocessor_config.json"


def load_processor(path: str | Path) -> ProcessorMixin:
    """The processor of the local HF folder ``path`` (no checkpoint code is run).

    ``AutoProcessor.from_pretrained`` when it works. When it raises ``ImportError`` because
    torchvision is missing and the folder's processor class needs it, the class's image-only variant (see
    :func:`image_only_processor_class`) is loaded instead, with one warning; any other failure is
    raised as is. ``ValueError`` if the processor has no chat template: prompts are built with it."""
    path = Path(path)
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
    except ImportError as err:  # how transformers reports a missing backend
        name = processor_class_name(path)
        if is_torchvision_available() or name is None or not needs_torchvision(name):
            raise
        warnings.warn(
            f"torchvision is not installed: {name} of {path} is built without its video processor (images and text only)", stacklevel=2
        )
        try:
            processor = image_only_processor_class(name).from_pretrained(path)
        except Exception as image_only_err:
            raise image_only_err from err
    if not processor.chat_template:
        raise ValueError(
            f"the processor of {path} has no chat template, which builds every prompt: add one with "
            f"`processor.chat_template = '<jinja template>'; processor.save_pretrained('{path}')`, "
            f"or write the template to {path / 'chat_template.jinja'}"
        )
    return processor


def processor_class_name(path: Path) -> str | None:
    """The processor class the folder ``path`` declares (``processor_class`` in its processor,
    image processor or tokenizer config, else the one transformers maps its ``model_type`` to)."""
    for name in PROCESSOR_CLASS_FILES:
        file = path / name
        if file.is_file() and (declared := json.loads(file.read_text()).get("processor_class")):
            return declared
    if not (path / "config.json").is_file():
        return None
    return PROCESSOR_MAPPING_NAMES.get(AutoConfig.from_pretrained(path, trust_remote_code=False).model_type)


def needs_torchvision(name: str) -> bool:
    """Whether transformers' processor class ``name`` cannot be built without torchvision: it takes
    a video processor, or its module imports torchvision (it is then a placeholder naming it)."""
    cls = getattr(transformers, name, None)
    if cls is None:
        return False
    if "torchvision" in getattr(cls, "_backends", ()):
        return True
    return "video_processor" in cls.get_attributes()


@cache
def image_only_processor_class(name: str) -> type[ProcessorMixin]:
    """Transformers' processor class ``name`` without its video processor, under the same name (so
    a folder saved from it names the full class and loads with ``AutoProcessor`` where torchvision
    is installed). ``PixtralProcessor``, which cannot be imported without torchvision, is replaced
    by :class:`PixtralProcessor` of this module."""
    if name == "PixtralProcessor":
        return PixtralProcessor
    family = getattr(transformers, name)
    return type(name, (WithoutVideoProcessor, family), {"__module__": __name__, "__doc__": f"{name} for images and text only."})


class WithoutVideoProcessor:
    """Mixin in front of a processor class that takes a video processor: the class is built
    without one, and the folder's video processor settings are written back when it is saved.
    ``video_processor`` holds only the settings a family reads for images and text too
    (:class:`VideoSettings`)."""

    video_processor_config: dict | None = None

    @property
    def video_processor(self) -> VideoSettings:
        saved = self.video_processor_config or {}
        return VideoSettings(num_frames=saved.get("num_frames"), fps=saved.get("fps"))

    @classmethod
    def get_attributes(cls) -> list[str]:
        return [a for a in super().get_attributes() if a != "video_processor"]

    @classmethod
    def get_processor_dict(cls, pretrained_model_name_or_path, **kwargs):
        processor_dict, rest = super().get_processor_dict(pretrained_model_name_or_path, **kwargs)
        video = processor_dict.pop("video_processor", None)
        legacy = Path(pretrained_model_name_or_path) / VIDEO_PROCESSOR_FILE
        if video is None and legacy.is_file():
            video = json.loads(legacy.read_text())
        # None for the class's own argument; ProcessorMixin pairs positional sub-processors with
        # get_attributes(), which no longer lists it, so the processor holds no video processor
        return {**processor_dict, "video_processor": None, "video_processor_config": video}, rest

    @classmethod
    def from_args_and_dict(cls, args, processor_dict, **kwargs):
        video = processor_dict.pop("video_processor_config", None)
        processor = super().from_args_and_dict(args, processor_dict, **kwargs)
        processor.video_processor_config = video
        return processor

    def to_dict(self) -> dict:
        out = super().to_dict()
        if self.video_processor_config is not None:
            out["video_processor"] = self.video_processor_config
        return out


@dataclass(frozen=True)
class VideoSettings:
    """What a processor reads from its video processor even for images and text: SmolVLM's
    ``apply_chat_template`` passes on the frame count and rate (the folder's values, None where it
    sets none), which only video inputs use. A video given to the processor is refused, not dropped."""

    num_frames: int | None = None
    fps: float | None = None

    def __call__(self, videos, **kwargs):
        raise ValueError("this processor was built without its video processor (torchvision is not installed): images and text only")


class PixtralProcessor(ProcessorMixin):
    """Stands in for transformers' ``PixtralProcessor`` (Mistral 3), whose module imports
    torchvision, for images and text: the same settings and saved files, and the same prompt. Each
    image becomes rows of ``[IMG]`` tokens, one per merged patch, each row closed by
    ``[IMG_BREAK]`` and the last one by ``[IMG_END]``; ``image_sizes`` goes to the model."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        patch_size: int = 16,
        spatial_merge_size: int = 1,
        chat_template=None,
        image_token: str = "[IMG]",
        image_break_token: str = "[IMG_BREAK]",
        image_end_token: str = "[IMG_END]",
        **kwargs,
    ):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.patch_size, self.spatial_merge_size = patch_size, spatial_merge_size
        self.image_token, self.image_break_token, self.image_end_token = image_token, image_break_token, image_end_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.image_break_token_id = tokenizer.convert_tokens_to_ids(image_break_token)
        self.image_end_token_id = tokenizer.convert_tokens_to_ids(image_end_token)

    @property
    def image_token_ids(self) -> list[int]:
        return [self.image_token_id, self.image_break_token_id, self.image_end_token_id]

    def _process_images(self, images, **images_kwargs):
        # the image processor resizes to a multiple of the merged patch, one token per merged patch
        images_kwargs["patch_size"] = self.patch_size * self.spatial_merge_size
        return super()._process_images(images, **images_kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        step = self.patch_size * self.spatial_merge_size
        height, width = (int(v) for v in image_inputs["image_sizes"][image_idx])
        rows = [self.image_token * (width // step)] * (height // step)
        return self.image_break_token.join(rows) + self.image_end_token

    @property
    def model_input_names(self) -> list[str]:
        return self.tokenizer.model_input_names + self.image_processor.model_input_names + ["image_sizes"]
