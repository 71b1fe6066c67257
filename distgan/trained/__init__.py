"""Using a trained model, in one package: a checkpoint (or run folder) loaded as one
:class:`Model` — the Python API, ``distgan.load(…)`` — and every command that uses one, each
command's handler next to its code (``distgan/cli.py`` only parses and dispatches).

* ``model.py``: :class:`Model` and :func:`load` (sample / encode / decode / translate, the one
  sampling path);
* ``sample.py``: ``distgan sample``; ``export.py``: ``distgan export`` (safetensors);
* ``files.py``: ``distgan colorize`` and ``distgan translate`` on image files;
* ``evaluate.py``: ``distgan eval`` and ``distgan eval ref`` (under distgan/evaluation/protocol.py);
* ``latent/``: ``distgan latent …``.

(The networks themselves are in ``distgan.models``.)
"""

from distgan.trained.model import Model, load

__all__ = ["Model", "load"]
