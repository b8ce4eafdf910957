"""``python -m raykv ...`` is the ``raykv`` command."""

from raykv.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
