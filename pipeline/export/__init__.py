"""Export one epoch's embedding network for use without this repository.

    python -m pipeline.export --experiment demo --epoch 14 [--artifacts ROOT] [--force] OUT

writes the folder ``OUT`` (atomically: a hidden sibling renamed into place) with

- ``model.pt``: the network as TorchScript, in eval mode on the CPU in float32. It
  takes float ``(B, 3, S, S)`` RGB images in [0, 1] at the dataset's stored size
  ``S`` and returns ``(B, embedding_dim)`` vectors; upsampling (if the experiment
  uses ``[model] input_size``) and ImageNet normalisation happen inside it. Load it
  with ``torch.jit.load(path)``: no code from this repository is needed.
- ``preprocessing.json``: how to turn an image file into that input exactly as
  indexing does (decoding, colour conversion, resize filter), plus the mean/std
  the model applies, the embedding length, the distance and the settings. The
  same JSON is also stored inside ``model.pt`` (``_extra_files``).

Modules: :mod:`.locations` (the checkpoint to read and the folder to write, with
the errors a user can act on), :mod:`.preprocessing` (the JSON),
:mod:`.writer` (tracing and writing), ``__main__`` (the command).
"""

from pipeline.export.locations import ExportError, check_out, checkpoint_path
from pipeline.export.writer import export_model

__all__ = ["ExportError", "check_out", "checkpoint_path", "export_model"]
