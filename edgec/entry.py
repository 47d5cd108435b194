"""The ``edgec`` executable's entry point, kept free of imports.

Importing the CLI pulls in click, numpy and more, which takes long enough for a
Ctrl-C to land there; caught here, it ends as every interrupt does (``edgec: aborted``,
exit 130) instead of a traceback."""

import sys


def main() -> int:
    try:
        from .cli import console_main
    except KeyboardInterrupt:
        sys.stderr.write("edgec: aborted\n")
        return 130
    return console_main()


if __name__ == "__main__":
    sys.exit(main())
