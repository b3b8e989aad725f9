"""Serve the family chat: `python app.py` (host, port, login and processes from BOT_ settings)."""

import os
import sys

from bot.assistant import build_assistant
from bot.settings import get_settings
from bot.web import create_app, launch, more_processes, warm_up


def main() -> None:
    """Build the assistant with the shared factory and serve the page, from `web_processes` processes.

    This process builds or updates the index first; the others (this same file, started once it is ready)
    open that index and serve on the same port."""
    settings = get_settings()
    assistant = build_assistant(settings)
    warm_up(assistant, settings)  # in the other processes only: the first one serves at once
    with more_processes(settings, [sys.executable, os.path.abspath(__file__)]):
        launch(create_app(assistant, settings), settings)


if __name__ == "__main__":
    main()
