"""The `layersearch` command: thin wrappers that parse, call one function and print."""

from __future__ import annotations

import sys

from .layers import ARCHS, LayerError, check_arch, format_layer_table

USAGE = """usage: layersearch COMMAND [ARGS]

commands:
  layers [vgg16|vgg19]   layer names with channels, stride and receptive field
"""


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


def cmd_layers(args: list[str]) -> int:
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        if args and args[0] in ("-h", "--help"):
            print(f"usage: layersearch layers [{'|'.join(ARCHS)}]")
            return 0
        raise UsageError(f"layers takes one architecture ({', '.join(ARCHS)}), got {' '.join(args)}")
    arch = check_arch(args[0] if args else "vgg16")
    print(f"{arch}: one name per module of torchvision's {arch}.features; stride and receptive field in pixels")
    print(format_layer_table(arch))
    return 0


COMMANDS = {"layers": cmd_layers}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"layersearch: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](args)
    except (UsageError, LayerError) as err:
        print(f"layersearch {command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
