"""lmms-eval's LLaVA model classes around a model the project has loaded (imports lmms-eval: only
:mod:`study.evaluation.lmms` imports this module, after checking that the ``lmms`` extra is there).

lmms-eval's ``llava_hf`` classes load a folder themselves with ``from_pretrained``. Here they are given
the model and processor :func:`study.models.io.load_model` returned (the device and dtype the
evaluate settings chose; also a width-pruned folder with per-layer widths, which stock
``from_pretrained`` cannot load), and keep their own prompting and generation:

- :class:`LlavaChat` is ``llava_hf``'s chat class, the one ``--model llava_hf`` runs: it generates
  (``generate_until`` tasks) from the processor's chat template; a text-only question is given no
  image (upstream passes an empty image list, which the LLaVA processor turns into an empty
  ``pixel_values`` that the vision tower fails on);
- :class:`LlavaSimple` is its simple class with ``loglikelihood`` fixed for LLaVA folders: the
  upstream method measures the prompt's length without its image, which every LLaVA processor
  refuses ("Found 1 <image> tokens in the text but no images were passed"), and lmms-eval's chat
  classes refuse loglikelihood tasks. lmms-eval 0.7.3's evaluator also turns every model output
  that is not text into its string (``unwrap_generation_output``), so that its multiple-choice
  scoring cannot read a (loss, greedy) pair back ("too many values to unpack"); each pair is handed
  over inside a ``GenerationResult``, which the evaluator unwraps as it is.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.chat.llava_hf import LlavaHf as LlavaHfChat
from lmms_eval.models.simple.llava_hf import LlavaHf as LlavaHfSimple
from tqdm import tqdm

from study.models.device import move_to_model


class _NoEmptyImages:
    """The processor, with an empty list of images or videos passed as none."""

    def __init__(self, processor) -> None:
        self._processor = processor

    def __call__(self, *args, images=None, videos=None, **kwargs):
        return self._processor(*args, images=images or None, videos=videos or None, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._processor, name)


class _Loaded:
    """What lmms-eval's ``llava_hf`` classes read, set from a model in memory instead of a folder."""

    def __init__(self, model, processor, name: str) -> None:
        lmms.__init__(self)
        self._model, self._tokenizer, self._config = model, processor.tokenizer, model.config
        self._image_processor = _NoEmptyImages(processor)
        self._device = model.device
        self.device_map = str(model.device)
        self.batch_size_per_gpu = 1  # the upstream generate_until answers one request at a time
        self.chat_template = None  # the processor's own
        self.use_cache = True
        self.max_frames_num = 32
        self.pretrained = name
        self.accelerator = Accelerator()


class LlavaChat(_Loaded, LlavaHfChat):
    """``llava_hf``'s chat class (generation) on a loaded model."""


class LlavaSimple(_Loaded, LlavaHfSimple):
    """``llava_hf``'s simple class on a loaded model, with a loglikelihood that passes the image."""

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """Per request (context, continuation): the mean cross-entropy of the continuation's tokens
        after the chat-templated context with its images first (the value lmms-eval's LLaVA classes
        return: its multiple-choice tasks take the option with the lowest), and whether greedy
        decoding gives the continuation; each pair in a ``GenerationResult`` (see the module docstring)."""
        out = []
        for context, continuation, doc_to_visual, doc_id, task, split in tqdm([r.args for r in requests], desc="loglikelihood"):
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            content = [{"type": "image"} for _ in visuals] + [{"type": "text", "text": context}]
            prompt = self._image_processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
            images = visuals or None
            prompt_len = self._image_processor(text=[prompt], images=images, return_tensors="pt")["input_ids"].shape[1]
            enc = move_to_model(self._image_processor(text=[prompt + continuation], images=images, return_tensors="pt"), self.model)
            labels = enc["input_ids"].clone()
            labels[:, :prompt_len] = -100
            outputs = self.model(**enc, labels=labels)
            greedy = outputs.logits[:, prompt_len - 1 : -1].argmax(-1)
            pair = (float(outputs.loss), bool((greedy == enc["input_ids"][:, prompt_len:]).all()))
            out.append(GenerationResult(text=pair))
        return out
