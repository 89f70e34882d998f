from shared.runtime import serve

from .app import build
from .settings import NotifySettings

settings = NotifySettings()
serve(build(settings), settings)
