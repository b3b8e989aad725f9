"""Serve the family chat: `python app.py` (host, port and login from BOT_ settings)."""

from bot.assistant import build_assistant
from bot.settings import get_settings
from bot.web import create_app, launch


def main() -> None:
    """Build the assistant with the shared factory and serve the page."""
    settings = get_settings()
    launch(create_app(build_assistant(settings), settings), settings)


if __name__ == "__main__":
    main()
