"""`sdstudio create-hypernetwork`: A1111's Create hypernetwork (Train tab) from the command line."""

from __future__ import annotations

import argparse

# Flag -> A1111 field (`create_hypernetwork`'s parameter names); an error naming a field names its flag instead.
FLAGS = {
    "NAME": "name",
    "--enable-sizes": "enable_sizes",
    "--layer-structure": "layer_structure",
    "--activation-func": "activation_func",
    "--weight-init": "weight_init",
    "--dropout-structure": "dropout_structure",
}


def register(subparsers) -> None:
    """Add the `create-hypernetwork` subcommand."""
    parser = subparsers.add_parser(
        "create-hypernetwork",
        help="create a new hypernetwork (A1111's Create hypernetwork)",
        description="Write a new, randomly initialised hypernetwork to models/hypernetworks/NAME.pt in A1111's "
        "format; use it in a prompt as <hypernet:NAME:1> (train it to make it do something).",
    )
    parser.add_argument("name", metavar="NAME", help="file name (letters, digits and ._- and spaces are kept)")
    parser.add_argument(
        "--enable-sizes",
        default="768,320,640,1280",
        metavar="WIDTHS",
        help="context widths to make layers for, comma-separated (default 768,320,640,1280; SD2: 1024,...)",
    )
    parser.add_argument("--layer-structure", default="1, 2, 1", metavar="MULTIPLES", help="default: 1, 2, 1")
    parser.add_argument(
        "--activation-func", default="linear", metavar="NAME", help="linear (default), relu, leakyrelu, elu, swish..."
    )
    parser.add_argument(
        "--weight-init",
        default="Normal",
        metavar="INIT",
        help="Normal (default), XavierUniform, XavierNormal, KaimingUniform or KaimingNormal",
    )
    parser.add_argument("--add-layer-norm", action="store_true", help="a LayerNorm after each layer")
    parser.add_argument("--use-dropout", action="store_true", help="use --dropout-structure")
    parser.add_argument(
        "--dropout-structure", default="0, 0, 0", metavar="P", help="dropout after each layer, first and last 0"
    )
    parser.add_argument("--overwrite-old", action="store_true", help="replace a hypernetwork of the same name")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Create the file and print its path."""
    from sdstudio.config import DataPaths, resolve_data_dir
    from sdstudio.errors import InvalidRequest
    from sdstudio.extensions.hypernetwork import create_hypernetwork

    paths = DataPaths(resolve_data_dir(args.data_dir)).ensure()
    try:
        path = create_hypernetwork(
            paths.folder("hypernetwork"),
            args.name,
            enable_sizes=args.enable_sizes.split(","),
            layer_structure=args.layer_structure,
            activation_func=args.activation_func,
            weight_init=args.weight_init,
            add_layer_norm=args.add_layer_norm,
            use_dropout=args.use_dropout,
            dropout_structure=args.dropout_structure,
            overwrite_old=args.overwrite_old,
        )
    except InvalidRequest as exc:
        flag = next((flag for flag, name in FLAGS.items() if name == exc.field), exc.field)
        raise InvalidRequest(flag, exc.reason) from None
    print(path)
    return 0
