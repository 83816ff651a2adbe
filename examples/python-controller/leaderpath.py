"""Finds the ``leader_client`` package (``clients/python`` of this repository).

The controller runs as ``python3 examples/python-controller/controller.py`` from a source
checkout, with nothing installed: when ``leader_client`` is not importable (not pip-installed,
not next to the modules as in the image, where the Dockerfile copies it to ``/app``), the
checkout's ``clients/python`` is put on ``sys.path``, after the controller's own folder.
"""

from __future__ import annotations

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
#: ``clients/python`` of the checkout this file is in.
CHECKOUT_PACKAGE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "clients", "python")


def ensure() -> None:
    """Makes ``import leader_client`` work, or leaves ``sys.path`` as it is when it already
    does (an installed package wins over the checkout's)."""
    if importlib.util.find_spec("leader_client") is not None:
        return
    if os.path.isdir(os.path.join(CHECKOUT_PACKAGE, "leader_client")) and CHECKOUT_PACKAGE not in sys.path:
        sys.path.insert(1 if sys.path and sys.path[0] == HERE else 0, CHECKOUT_PACKAGE)
