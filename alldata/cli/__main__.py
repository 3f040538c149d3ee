"""``python -m alldata.cli``: the ``alldata`` command, e.g. under ``accelerate launch -m alldata.cli train-generator ...``."""

from alldata.cli import app

if __name__ == "__main__":
    app()
