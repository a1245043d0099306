"""``python -m stexture._stream URL``: write the file at ``URL`` (any fsspec URL) to standard
output, for webdataset's ``pipe:`` URLs (:func:`stexture.shards.webdataset_urls`).

The file is opened with fsspec and the default storage options of
``STEXTURE_STORAGE_OPTIONS`` (a JSON object; :mod:`stexture._storage_options`); for S3 the
environment's ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ... apply as well. Only fsspec and
the protocol's package are loaded (not the shard writer), as it runs once per shard. A
failure is one line on standard error and exit status 1 (webdataset then names the URL).
"""

from __future__ import annotations

import os
import sys

from ._storage_options import storage_options_for

_BLOCK = 1 << 20


def main(argv: list[str] | None = None) -> int:
    """Copy the file at ``argv[0]`` to standard output; 0 on success, 1 (with a line on
    standard error) when it cannot be read, 2 for a wrong command line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m stexture._stream URL", file=sys.stderr)
        return 2
    url = args[0]
    out = sys.stdout.buffer
    try:
        import fsspec

        with fsspec.open(url, "rb", **storage_options_for()) as source:
            for block in iter(lambda: source.read(_BLOCK), b""):
                out.write(block)
        out.flush()
    except BrokenPipeError:  # the reader stopped early (webdataset closing the pipe)
        # no second BrokenPipeError from the interpreter's own flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - one line for any storage failure
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"stexture._stream: cannot read {url}: {type(exc).__name__}: {text}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
