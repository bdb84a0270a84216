"""A1111 hypernetworks: read and write their `.pt` files, apply them per job by `<hypernet:NAME:W>`, create them.

Public API (what the engine, server, UI and CLI use): `HypernetworkLibrary`, `HypernetworkBatchHook`,
`Hypernetwork`, `HypernetworkStructure`, `load_hypernetwork_file`, `hypernetworks_applied`,
`list_hypernetworks`, `create_hypernetwork`, `hypernet_tags`.
"""

from sdstudio.extensions.hypernetwork.apply import hypernetworks_applied
from sdstudio.extensions.hypernetwork.library import (
    HypernetTag,
    HypernetworkBatchHook,
    HypernetworkLibrary,
    create_hypernetwork,
    hypernet_tags,
    list_hypernetworks,
)
from sdstudio.extensions.hypernetwork.network import Hypernetwork, HypernetworkStructure, load_hypernetwork_file

__all__ = [
    "HypernetTag",
    "Hypernetwork",
    "HypernetworkBatchHook",
    "HypernetworkLibrary",
    "HypernetworkStructure",
    "create_hypernetwork",
    "hypernet_tags",
    "hypernetworks_applied",
    "list_hypernetworks",
    "load_hypernetwork_file",
]
